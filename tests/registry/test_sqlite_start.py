"""Worker processes starting together on an empty data_dir all open the registry and the async
queue: turning a new SQLite file to WAL answered "database is locked" at once to whoever asked
while another did it (no busy wait), and that worker exited at start-up."""

from __future__ import annotations

import multiprocessing
import multiprocessing.synchronize
from pathlib import Path

from gateway.functions.queue import EventStore
from gateway.functions.registry_sqlite import SqliteStore

PROCESSES = 4
ROUNDS = 20  # before the fix, 20 of 100 rounds had a loser: 20 rounds all passing by chance is ~1 %


def _open_both(data_dir: Path, go: multiprocessing.synchronize.Barrier, out: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    go.wait()
    try:
        SqliteStore(data_dir)
        EventStore(data_dir / "queue.sqlite3").close()
        out.put("ok")
    except Exception as exc:
        out.put(f"{type(exc).__name__}: {exc}")


def test_workers_opening_a_new_data_dir_at_once_all_start(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("fork")
    failures: list[str] = []
    for n in range(ROUNDS):
        go, out = ctx.Barrier(PROCESSES), ctx.Queue()
        children = [
            ctx.Process(target=_open_both, args=(tmp_path / f"d{n}", go, out)) for _ in range(PROCESSES)
        ]
        for child in children:
            child.start()
        failures += [r for r in (out.get(timeout=60) for _ in children) if r != "ok"]
        for child in children:
            child.join(60)
    assert failures == []
