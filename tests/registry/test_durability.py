"""Crash atomicity and concurrent writers of the SQLite registry, with real processes.

A child changing the registry in a loop is killed with SIGKILL at random moments, several rounds on
the same data directory; after each kill the registry must open and be consistent: every document
parses, every reference (version, alias, URL, secret) points at something that exists, and every
blob a document names exists with the right sha256. Then several processes change one function
document at once: compare-and-set retries must lose none of their updates.
"""

from __future__ import annotations

import hashlib
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from gateway.functions.registry import LATEST, FunctionInfo, Registry, UrlInfo
from gateway.functions.registry_sqlite import SqliteStore

ROOT = Path(__file__).resolve().parents[2]
ROUNDS = 12


def worker(*args: str, module: str = "tests.registry.workers") -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", module, *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def kill_at_random(child: subprocess.Popen[str], rng: random.Random) -> None:
    """Once the worker says it is ready, let it work a random while, then SIGKILL it."""
    assert child.stdout is not None
    line = child.stdout.readline()
    assert line == "ready\n", f"worker did not start: {line!r} {child.stderr.read() if child.stderr else ''}"
    time.sleep(rng.uniform(0.05, 1.0))
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def assert_consistent(data_dir: Path) -> dict[str, int]:
    """Every rule a committed state must satisfy; returns a few counts for the test to look at."""
    with sqlite3.connect(data_dir / "registry.sqlite3") as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    registry = Registry(SqliteStore(data_dir))
    try:
        functions = registry.functions()
        urls = registry.urls()
        secrets = set(registry.secret_names())
        url_ids = {u.url_id: u for u in urls}
        counts = {"functions": len(functions), "versions": 0, "aliases": 0, "urls": len(urls)}
        for info in functions:
            _, doc = registry.store.read(f"function/{info.name}")
            assert doc is not None and FunctionInfo.from_doc(doc) == info
            shas = [info.code_sha256, *(v.code_sha256 for v in info.versions)]
            for sha in shas:
                assert sha256(registry.blob_path(sha)) == sha, f"{info.name}: blob {sha} is missing or wrong"
            numbers = [v.version for v in info.versions]
            assert doc["next_version"] > max(numbers, default=0)
            for alias in info.aliases:
                assert alias.versions() <= set(numbers), (
                    f"{info.name}:{alias.name} points at a deleted version"
                )
            for label, config in [
                (LATEST, info.config),
                *((str(v.version), v.config) for v in info.versions),
            ]:
                for _, secret in config.secrets:
                    assert secret in secrets, f"{info.name}:{label} reads a missing secret {secret!r}"
            for qualifier, url_id in doc["urls"].items():
                u: UrlInfo = url_ids[url_id]
                assert (u.function, u.qualifier or "") == (info.name, qualifier)
                assert not qualifier or qualifier in {a.name for a in info.aliases}
            counts["versions"] += len(numbers)
            counts["aliases"] += len(info.aliases)
        owners = {
            url_id
            for info in functions
            for url_id in registry.store.read(f"function/{info.name}")[1]["urls"].values()
        }
        assert set(url_ids) == owners, "a URL document without its function's reference, or the reverse"
        # No blob file is ever half-written: the rename happens only after the bytes are on disk.
        for blob in (data_dir / "components").glob("*.wasm"):
            assert sha256(blob) == blob.stem
        return counts
    finally:
        registry.close()


def test_sigkill_at_random_moments_leaves_a_consistent_registry(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    rng = random.Random(20240601)
    totals: list[dict[str, int]] = []
    for round_ in range(ROUNDS):
        kill_at_random(worker("churn", str(data_dir), str(round_)), rng)
        totals.append(assert_consistent(data_dir))
    # the churn really did build up state across the kills (versions, aliases and URLs exist)
    assert totals[-1]["functions"] == 3
    assert sum(t["versions"] for t in totals) > 0 and sum(t["aliases"] for t in totals) > 0
    assert sum(t["urls"] for t in totals) > 0


def test_concurrent_writers_lose_no_update(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    registry = Registry(SqliteStore(data_dir))
    code = tmp_path / "code.wasm"
    code.write_bytes(b"shared")
    registry.deploy("shared", code)
    registry.publish("shared")
    start_revision = registry.revision()
    workers, per_worker = 4, 15
    children = [worker("aliases", str(data_dir), str(i), str(per_worker)) for i in range(workers)]
    (data_dir / "go").touch()
    for child in children:
        _, err = child.communicate(timeout=300)
        assert child.returncode == 0, err
    info = registry.get("shared")
    expected = {f"p{i}-{k}" for i in range(workers) for k in range(per_worker)}
    assert {a.name for a in info.aliases} == expected
    urls = registry.urls("shared")
    assert {u.qualifier for u in urls} == expected and len({u.url_id for u in urls}) == len(expected)
    # one store revision per successful change: 2 per alias (set, URL), none lost or doubled
    assert registry.revision() == start_revision + 2 * len(expected)
    registry.close()
    assert_consistent(data_dir)
