"""Opening the node's SQLite files (the registry, the async queue), which the worker processes of
`serve --workers N` share.

WAL mode with `synchronous=FULL`: a committed write survives a kill -9 or a power cut, and
`timeout_s` is SQLite's busy timeout, so writers wait for each other instead of failing. Turning a
new file to WAL is the exception: SQLite answers "database is locked" at once, without its busy
handler, to a connection that asks while another one is doing it. Workers starting together on an
empty data_dir did that in 20 of 100 rounds of four processes (by hand, December 2026), and the
worker that lost exited at start-up; the change of mode is retried here within the same timeout.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

RETRY_S = 0.01


def connect(path: Path, timeout_s: float) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit) usable from any thread."""
    db = sqlite3.connect(path, timeout=timeout_s, isolation_level=None, check_same_thread=False)
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            db.execute("PRAGMA journal_mode=WAL")
            break
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                db.close()
                raise
            time.sleep(RETRY_S)
    db.execute("PRAGMA synchronous=FULL")
    return db
