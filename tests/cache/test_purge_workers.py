"""A purge reaches every worker of a node on its own (`serve --workers N`, `control_plane = "sqlite"`).

End to end: `edgefn serve --workers 2`, each worker fills its own cache (requests on fresh
connections reach whichever worker accepts first; the worker is the per-process prefix of
`x-request-id`), one admin purge, then every worker answers a MISS. Then the fan-out itself
(edge/node_purges.py) in one process: several ends on one directory, a dead process's socket, a
process that does not read.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
from pathlib import Path

import httpx
import pytest

from edge.cache import EdgeCache, Entry
from edge.node_purges import NodePurgeError, NodePurges
from tests.cache.conftest import TOKEN, Origin, Reply, serve_node
from tests.fleet.test_fleet_e2e import until
from tests.fleet.test_fleet_workers import PURGE_REACH_S, on_every_worker, workers_of

WORKERS = 2
AUTH = {"authorization": f"Bearer {TOKEN}"}


class _Node:
    """What `on_every_worker` asks of a node."""

    def __init__(self, url: str) -> None:
        self.url = url


def test_an_admin_purge_reaches_every_worker(tmp_path: Path, origin: Origin) -> None:
    origin.on("/page", Reply(headers=[("cache-control", "max-age=600")]))
    origin.on("/other", Reply(headers=[("cache-control", "max-age=600")]))
    with serve_node(tmp_path, origin, workers=WORKERS) as (base, admin):
        node = _Node(base)
        workers = workers_of(node, "/other", headers={})
        hit = lambda r: r.headers["x-cache"] == "HIT"  # noqa: E731
        miss = lambda r: r.headers["x-cache"] == "MISS"  # noqa: E731
        for path in ("/page", "/other"):  # each worker fills its own cache
            until(on_every_worker(node, workers, hit, path), 60, f"{path} cached by every worker")

        host = base.removeprefix("http://")
        r = httpx.post(admin + "/cache/purge", json={"key": f"{host}/page"}, headers=AUTH, timeout=10)
        assert r.json() == {"purged": 1, "told": WORKERS - 1}, r.text
        seen: list[str] = []
        purged = on_every_worker(node, workers, miss, "/page", once=True, seen=seen)
        until(purged, PURGE_REACH_S, "every worker answers a MISS for the purged key", seen)
        # what was not purged stays on every worker
        until(on_every_worker(node, workers, hit, "/other"), 60, "/other still a HIT on every worker")

        r = httpx.post(admin + "/cache/purge", json={"prefix": ""}, headers=AUTH, timeout=10)
        assert r.json()["told"] == WORKERS - 1, r.text
        seen = []
        emptied = on_every_worker(node, workers, miss, "/other", once=True, seen=seen)
        until(emptied, PURGE_REACH_S, "every worker answers a MISS after emptying the cache", seen)


def test_a_successful_post_invalidates_the_uri_on_every_worker(tmp_path: Path, origin: Origin) -> None:
    """RFC 9111 4.4 for a node whose workers are one cache to its clients: after a POST that
    succeeded through one worker, no worker answers a stored copy of that URI."""
    origin.on("/doc", Reply(headers=[("cache-control", "max-age=600")]))
    with serve_node(tmp_path, origin, workers=WORKERS) as (base, _admin):
        node = _Node(base)
        workers = workers_of(node, "/doc", headers={})
        until(on_every_worker(node, workers, lambda r: r.headers["x-cache"] == "HIT", "/doc"), 60, "cached")
        posted = httpx.post(base + "/doc", content=b"edit", timeout=10)
        assert posted.status_code == 200
        seen: list[str] = []
        miss = on_every_worker(
            node, workers, lambda r: r.headers["x-cache"] == "MISS", "/doc", once=True, seen=seen
        )
        until(miss, PURGE_REACH_S, "every worker answers a MISS after the POST", seen)


def test_a_killed_worker_is_replaced_in_the_fan_out(tmp_path: Path, origin: Origin) -> None:
    sockets = tmp_path / "data" / "run" / "purge"
    with serve_node(tmp_path, origin, workers=WORKERS) as (_, admin):
        until(lambda: len(os.listdir(sockets)) == WORKERS, 60, "both workers bound their purge socket")
        victim = sorted(os.listdir(sockets))[0]
        os.kill(int(victim.split("-")[0]), signal.SIGKILL)
        # the replacement removes the dead worker's socket when it binds its own
        replaced = lambda: victim not in os.listdir(sockets) and len(os.listdir(sockets)) == WORKERS  # noqa: E731
        until(replaced, 60, "the replacement bound its socket")
        r = httpx.post(admin + "/cache/purge", json={"prefix": ""}, headers=AUTH, timeout=10)
        assert r.json() == {"purged": 0, "told": WORKERS - 1}, r.text
    assert os.listdir(sockets) == [], "a graceful stop removes every worker's socket"


# -- the fan-out in one process ----------------------------------------------------------------------


def _cache(*keys: str) -> EdgeCache:
    cache = EdgeCache()
    for key in keys:
        cache.store(Entry("r", key, 200, [], (b"x",), (), 0.0, 0.0, 0.0, 600.0))
    return cache


async def _settle() -> None:
    """Let the loop run the readers of datagrams already queued."""
    for _ in range(5):
        await asyncio.sleep(0)


def test_each_end_takes_each_purge_once_and_a_later_end_from_its_start(tmp_path: Path) -> None:
    async def scenario() -> None:
        directory = tmp_path / "run" / "purge"
        a, b = NodePurges(directory, _cache("h/a", "h/b")), NodePurges(directory, _cache("h/a", "h/b", "h/c"))
        a.start()
        b.start()
        assert await a.broadcast(key="h/a") == 1
        await _settle()
        assert b.cache.keys() == ["h/b", "h/c"]
        assert a.cache.keys() == ["h/a", "h/b"]  # the sender purges its own cache itself (cache_api)
        later = NodePurges(directory, _cache("h/b", "h/c"))
        later.start()  # nothing from before its start reaches it
        await _settle()
        assert later.cache.keys() == ["h/b", "h/c"]
        assert await b.broadcast(prefix="h/") == 2
        await _settle()
        assert a.cache.keys() == [] and later.cache.keys() == []
        for end in (a, b, later):
            end.close()
        assert os.listdir(directory) == []

    asyncio.run(scenario())


def test_a_dead_process_socket_is_removed_and_not_counted(tmp_path: Path) -> None:
    async def scenario() -> None:
        directory = tmp_path / "run" / "purge"
        a = NodePurges(directory, _cache())
        a.start()
        dead = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        dead.bind(str(directory / "1-dead.sock"))
        dead.close()  # as after a SIGKILL: the file stays, nobody reads it
        assert await a.broadcast(key="h/a") == 0
        assert os.listdir(directory) == [a.name]
        a.close()

    asyncio.run(scenario())


def test_a_process_that_does_not_read_fails_the_purge_loudly(tmp_path: Path) -> None:
    async def scenario() -> None:
        directory = tmp_path / "run" / "purge"
        a = NodePurges(directory, _cache(), send_timeout_s=0.5)
        a.start()
        stuck = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        stuck.bind(str(directory / "2-stuck.sock"))  # alive, never reads: its queue fills
        try:
            with pytest.raises(NodePurgeError, match=r"did not take the purge .* 2-stuck\.sock"):
                for _ in range(10_000):
                    await a.broadcast(key="h/a")
            assert stuck.recv(1 << 16).startswith(b'{"key": "h/a"')  # what was taken is intact
        finally:
            stuck.close()
            a.close()

    asyncio.run(scenario())
