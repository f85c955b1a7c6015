"""Purge through the admin API and `edgefn cache purge`, against a real `edgefn serve` process."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.cache.conftest import EDGEFN, TOKEN, Origin, Reply, serve_node


@pytest.fixture
def node(tmp_path: Path, origin: Origin) -> Iterator[tuple[str, str]]:
    with serve_node(tmp_path, origin) as urls:
        yield urls


def cli(admin: str, *args: str, token: str = TOKEN) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "EDGEFN_ADMIN_TOKEN": token, "EDGEFN_ADMIN_URL": admin}
    return subprocess.run([*EDGEFN, "cache", *args], capture_output=True, text=True, env=env, timeout=60)


def state(base: str, path: str) -> str:
    return httpx.get(base + path, timeout=10).headers["x-cache"]


def test_purge_by_key_and_prefix(node: tuple[str, str], origin: Origin) -> None:
    base, admin = node
    for path in ("/img/a.png", "/img/b.png", "/page"):
        origin.on(path, Reply(headers=[("cache-control", "max-age=600")]))
        httpx.get(base + path, timeout=10)
        httpx.get(base + path + "?v=2", timeout=10)
    host = base.removeprefix("http://")
    auth = {"authorization": f"Bearer {TOKEN}"}

    shown = httpx.get(admin + "/cache", headers=auth, timeout=10).json()
    assert shown["entries"] == 6 and f"{host}/page?v=2" in shown["keys"]

    purged = httpx.post(admin + "/cache/purge", json={"key": f"{host}/page"}, headers=auth, timeout=10)
    assert purged.json() == {"purged": 1, "told": 0}  # one process: no other to tell
    assert state(base, "/page") == "MISS"
    assert state(base, "/page?v=2") == "HIT"  # an exact key is exactly one URL

    run = cli(admin, "purge", "--prefix", f"{host}/img/")
    assert run.returncode == 0, run.stderr
    assert "purged 4" in run.stdout
    assert [state(base, p) for p in ("/img/a.png", "/img/b.png?v=2", "/page?v=2")] == ["MISS", "MISS", "HIT"]

    run = cli("http://127.0.0.1:9", "purge", "--key", f"{host}/page?v=2", "--admin", admin, "--json")
    assert (run.returncode, run.stdout.strip()) == (0, '{"purged": 1, "told": 0}')
    assert state(base, "/page?v=2") == "MISS"

    run = cli("http://127.0.0.1:9", "--admin", admin, "show")  # --admin before the verb works too
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith(
        "4 objects,"
    )  # the MISSes above filled again and f"  {host}/page?v=2" in run.stdout.splitlines()


def test_purge_refuses_bad_tokens_and_bodies(node: tuple[str, str]) -> None:
    _, admin = node
    assert httpx.post(admin + "/cache/purge", json={"prefix": ""}, timeout=10).status_code == 401
    auth = {"authorization": f"Bearer {TOKEN}"}
    for body in ({}, {"key": "a", "prefix": "b"}, {"key": ""}, {"prefix": 3}, {"key": "k" * 8193}):
        answer = httpx.post(admin + "/cache/purge", json=body, headers=auth, timeout=10)
        assert answer.status_code == 400, body
        assert answer.json()["error"]["code"] == "bad_request"
    run = cli(admin, "purge", "--prefix", "", token="wrong")
    assert run.returncode == 1 and "401" in run.stderr
