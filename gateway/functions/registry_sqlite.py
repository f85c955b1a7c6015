"""The embedded registry store: documents in SQLite, component blobs as files named by sha256.

`data_dir/registry.sqlite3` in WAL mode with `synchronous=FULL`, so a committed write survives a
kill -9 or a power cut; every `write` is one `BEGIN IMMEDIATE` transaction that checks all the
expected revisions and changes everything or nothing. Several processes (`serve --workers N`) open
the same file; SQLite serialises their writers and `busy_timeout` makes them wait instead of fail.

Blobs are `data_dir/components/<sha256>.wasm`: copied to a temporary file, fsync'd, renamed and
the directory fsync'd, all before the registry commits a document naming them. A crash between the
two leaves an unreferenced blob, never a document pointing at a missing or partial file.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import tempfile
import threading
from pathlib import Path
from typing import Any

_SHA256 = re.compile(r"[0-9a-f]{64}")
_SCHEMA = """
CREATE TABLE IF NOT EXISTS docs (key TEXT PRIMARY KEY, rev INTEGER NOT NULL, doc TEXT);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO meta (name, value) VALUES ('revision', 0);
"""


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
        self._db = sqlite3.connect(
            self.path, timeout=busy_timeout_s, isolation_level=None, check_same_thread=False
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for statement in filter(str.strip, _SCHEMA.split(";")):
                    self._db.execute(statement)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def read(self, key: str) -> tuple[int, dict[str, Any] | None]:
        with self._lock:
            row = self._db.execute("SELECT rev, doc FROM docs WHERE key = ?", (key,)).fetchone()
        if row is None:
            return 0, None
        rev, text = row
        return rev, None if text is None else json.loads(text)

    def write(self, changes: dict[str, tuple[int, dict[str, Any] | None]]) -> bool:
        """All or nothing: every key must still be at its expected revision."""
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                for key, (expected, doc) in changes.items():
                    row = db.execute("SELECT rev FROM docs WHERE key = ?", (key,)).fetchone()
                    if (row[0] if row else 0) != expected:
                        db.execute("ROLLBACK")
                        return False
                    # A deleted document stays as a tombstone so its revision never goes back.
                    db.execute(
                        "INSERT INTO docs (key, rev, doc) VALUES (?, ?, ?) "
                        "ON CONFLICT(key) DO UPDATE SET rev = excluded.rev, doc = excluded.doc",
                        (key, expected + 1, None if doc is None else json.dumps(doc, sort_keys=True)),
                    )
                db.execute("UPDATE meta SET value = value + 1 WHERE name = 'revision'")
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
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

    def close(self) -> None:
        with self._lock:
            self._db.close()
