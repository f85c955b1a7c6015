"""The embedded registry store: documents in SQLite, component blobs as files named by sha256.

`data_dir/registry.sqlite3` in WAL mode with `synchronous=FULL`, so a committed write survives a
kill -9 or a power cut; every `write` is one `BEGIN IMMEDIATE` transaction that checks all the
expected revisions and changes everything or nothing. Several processes (`serve --workers N`) open
the same file; SQLite serialises their writers and `busy_timeout` makes them wait instead of fail.

Blobs are `data_dir/components/<sha256>.wasm`: copied to a temporary file, fsync'd, renamed and
the directory fsync'd, all before the registry commits a document naming them. A crash between the
two leaves an unreferenced blob, never a document pointing at a missing or partial file. A `write`
given `blobs` checks inside its transaction that those files exist, and `delete_blob` removes a file
inside the transaction that moves the blob's record: the two are serialised by SQLite's write lock,
so a write that names a blob can never commit after (or across) its deletion (docs/functions.md,
"Unreferenced blobs").
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import sqlite3
import tempfile
import threading
import time
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import Any

from gateway.functions.sqlite import connect

_SHA256 = re.compile(r"[0-9a-f]{64}")
_SCHEMA = """
CREATE TABLE IF NOT EXISTS docs (key TEXT PRIMARY KEY, rev INTEGER NOT NULL, doc TEXT);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO meta (name, value) VALUES ('revision', 0);
CREATE TABLE IF NOT EXISTS leases (name TEXT PRIMARY KEY, holder TEXT NOT NULL, until REAL NOT NULL);
"""


def _rev(db: sqlite3.Connection, key: str) -> int:
    row = db.execute("SELECT rev FROM docs WHERE key = ?", (key,)).fetchone()
    return row[0] if row else 0


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class SqliteStore:
    """`RegistryStore` over one SQLite file; one connection, used under a lock by any thread."""

    def __init__(self, data_dir: Path, *, busy_timeout_s: float = 60.0) -> None:
        self.data_dir = Path(data_dir)
        self.blob_dir = self.data_dir / "components"
        self.blob_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.data_dir / "registry.sqlite3"
        self._lock = threading.Lock()
        self._db = connect(self.path, busy_timeout_s)
        with self._transaction() as db:
            for statement in filter(str.strip, _SCHEMA.split(";")):
                db.execute(statement)

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One `BEGIN IMMEDIATE` transaction under the lock: committed when the block ends (unless
        it rolled back itself, to refuse a change), rolled back when it raises."""
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
            if db.in_transaction:
                db.execute("COMMIT")

    def read(self, key: str) -> tuple[int, dict[str, Any] | None]:
        with self._lock:
            row = self._db.execute("SELECT rev, doc FROM docs WHERE key = ?", (key,)).fetchone()
        if row is None:
            return 0, None
        rev, text = row
        return rev, None if text is None else json.loads(text)

    def write(
        self, changes: dict[str, tuple[int, dict[str, Any] | None]], blobs: Collection[str] = ()
    ) -> bool:
        """All or nothing: every key must still be at its expected revision, and every blob in
        `blobs` must exist (checked under the write lock, which `delete_blob` holds while it deletes)."""
        with self._transaction() as db:
            for key, (expected, _) in changes.items():
                if _rev(db, key) != expected:
                    db.execute("ROLLBACK")
                    return False
            if not all(self.blob_path(sha).exists() for sha in blobs):
                db.execute("ROLLBACK")
                return False
            for key, (expected, doc) in changes.items():
                # A deleted document stays as a tombstone so its revision never goes back.
                db.execute(
                    "INSERT INTO docs (key, rev, doc) VALUES (?, ?, ?) "
                    "ON CONFLICT(key) DO UPDATE SET rev = excluded.rev, doc = excluded.doc",
                    (key, expected + 1, None if doc is None else json.dumps(doc, sort_keys=True)),
                )
            db.execute("UPDATE meta SET value = value + 1 WHERE name = 'revision'")
        return True

    def keys(self, prefix: str) -> list[str]:
        escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        with self._lock:
            rows = self._db.execute(
                "SELECT key FROM docs WHERE key LIKE ? ESCAPE '\\' AND doc IS NOT NULL ORDER BY key",
                (escaped + "%",),
            ).fetchall()
        return [r[0] for r in rows]

    def revision(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT value FROM meta WHERE name = 'revision'").fetchone()[0])

    def put_blob(self, sha256: str, path: Path) -> None:
        """Copy `path` in as the blob `sha256`, durably; the caller computed the hash."""
        target = self.blob_path(sha256)
        if target.exists():
            return
        fd, tmp = tempfile.mkstemp(dir=self.blob_dir, prefix=f".{sha256[:16]}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as out, open(path, "rb") as src:
                shutil.copyfileobj(src, out, 1 << 20)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        fsync_dir(self.blob_dir)

    def blob_path(self, sha256: str) -> Path:
        if not _SHA256.fullmatch(sha256):
            raise ValueError(f"{sha256!r} is not a sha256 hex digest")
        return self.blob_dir / f"{sha256}.wasm"

    def blob_ids(self) -> list[str]:
        """The sha256 of every stored blob (the files in `components/`)."""
        return sorted(p.stem for p in self.blob_dir.glob("*.wasm") if _SHA256.fullmatch(p.stem))

    def delete_blob(self, sha256: str, expected: int) -> bool:
        """Delete the blob if its record `blob/<sha256>` is still at revision `expected`; the record
        becomes a tombstone. The file goes inside the transaction: a kill -9 after the unlink rolls
        the record back, and the next `write` naming the blob finds the file missing and is refused
        (its writer stores the blob again), so no document can name a deleted file."""
        key = f"blob/{sha256}"
        path = self.blob_path(sha256)
        with self._transaction() as db:
            if _rev(db, key) != expected:
                db.execute("ROLLBACK")
                return False
            self._unlink_blob(path)
            db.execute(
                "INSERT INTO docs (key, rev, doc) VALUES (?, ?, NULL) "
                "ON CONFLICT(key) DO UPDATE SET rev = excluded.rev, doc = NULL",
                (key, expected + 1),
            )
        return True

    def _unlink_blob(self, path: Path) -> None:
        """The file's removal, inside `delete_blob`'s transaction (a seam for the crash tests)."""
        path.unlink(missing_ok=True)

    def local_files(self) -> list[Path]:
        """Files a sweep may remove by age: temporaries of copies a crash cut short. The blobs here
        are the registry's own, not copies: only `delete_blob` removes them."""
        return sorted(self.blob_dir.glob(".*.tmp"))

    def lease(self, name: str, holder: str, ttl_s: float) -> bool:
        """Take or renew the lease `name` for `ttl_s` seconds; False while another holder has it."""
        now = time.time()
        with self._transaction() as db:
            row = db.execute("SELECT holder, until FROM leases WHERE name = ?", (name,)).fetchone()
            if row is not None and row[0] != holder and row[1] > now:
                db.execute("ROLLBACK")
                return False
            db.execute(
                "INSERT INTO leases (name, holder, until) VALUES (?, ?, ?) "
                "ON CONFLICT(name) DO UPDATE SET holder = excluded.holder, until = excluded.until",
                (name, holder, now + ttl_s),
            )
        return True

    def release(self, name: str, holder: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM leases WHERE name = ? AND holder = ?", (name, holder))

    def close(self) -> None:
        with self._lock:
            self._db.close()
