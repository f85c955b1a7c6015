"""Reclaiming component blobs and compiled artifacts that no document names any more.

Every deploy of new code leaves the code it replaced (and every deleted function or version its
own) as a blob of ~18 MB and a compiled artifact of tens of MB; without this, a node that deploys a
few times a day fills its disk. A sweep, per pass:

1. shared blobs (SQLite's `components/`, or Redis' `blob:<sha256>`), by one process of the node or
   fleet at a time (a lease in the store): read every blob's record `blob/<sha256>`, *then* every
   function document; a blob no document names gets a mark `unreferenced_since` in its record (one
   compare-and-set write), and a blob whose mark is older than `grace_s` is deleted by
   `store.delete_blob(sha, rev)`, which applies only if the record is still at the revision read
   before the documents were. A deploy rewrites the record (and so drops the mark) in the same
   write as the document naming the blob, and that write applies only if the blob exists: whatever
   the interleaving, either the sweep sees the document, or its delete finds the record moved, or
   the deploy finds the blob gone and stores it again. The grace period is not what makes it safe;
   it keeps the code of a recent rollback target and of a request that resolved just before a
   change.
2. this node's files, in every process: compiled artifacts `compiled/<sha256>-*.cwasm`, their
   import plans (`.imports`) and the store's local copies in a fleet, whose sha256 no document
   names, which no unexpired record protects, and that were last written more than `grace_s` ago
   (the admin API compiles an upload before the blob is stored: its fresh artifact is kept by its
   age; a `compiled/` that is a symbolic link is shared with other data directories and left
   alone). Removing a cache file costs at most a fetch or a recompile; a component already
   loaded keeps running, since the runtime holds it in memory (a deserialized artifact is a
   private mapping of a file that Linux keeps until it is unmapped).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import re
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from gateway.functions.registry import Registry
from gateway.functions.registry_records import Changes, Doc

log = logging.getLogger("edgefn.registry.sweep")

LEASE = "blob-sweep"
GRACE_S = 3600.0  # a blob is deleted after being unreferenced this long (two passes apart)
INTERVAL_S = 600.0
LEASE_S = 300.0
_ARTIFACT = re.compile(r"[0-9a-f]{64}-.+")  # the runtime's files in compiled/, finished or not
_FINISHED = re.compile(r"([0-9a-f]{64})(?:\.wasm|-[^.]+\.(?:cwasm|imports))")
MARK = "unreferenced_since"


@dataclass
class SweepReport:
    """What one pass did: sha256s marked and deleted (shared), local files removed."""

    leased: bool = False
    marked: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    kept: int = 0
    local: list[Path] = field(default_factory=list)


class BlobSweeper:
    """Sweeps `registry`'s blobs and this node's `compiled_dir`; `sweep()` is one pass (sync, on
    any thread), `start()` runs passes in the background every `interval_s` (with jitter)."""

    def __init__(
        self,
        registry: Registry,
        *,
        compiled_dir: Path | None = None,
        grace_s: float = GRACE_S,
        interval_s: float = INTERVAL_S,
        lease_s: float = LEASE_S,
        clock: Callable[[], float] | None = None,
    ) -> None:
        if grace_s < 0 or interval_s <= 0 or lease_s <= 0:
            raise ValueError("grace_s must be >= 0, interval_s and lease_s > 0")
        self.registry = registry
        self.store = registry.store
        self.compiled_dir = compiled_dir
        self.grace_s = grace_s
        self.interval_s = interval_s
        self.lease_s = lease_s
        self.clock = clock or time.time
        self.holder = f"{os.getpid()}-{secrets.token_hex(6)}"
        self.passes = 0
        self._stopping = threading.Event()
        self._busy = threading.Lock()
        self._task: asyncio.Task[None] | None = None

    # -- one pass ----------------------------------------------------------------------------------

    def sweep(self) -> SweepReport:
        """One pass: the shared blobs if this process gets the lease, then this node's files."""
        with self._busy:
            report = SweepReport()
            now = self.clock()
            report.leased = self.store.lease(LEASE, self.holder, self.lease_s)
            records: dict[str, tuple[int, Doc | None]] = {}
            if report.leased:
                try:
                    records = self._shared(now, report)
                finally:
                    self.store.release(LEASE, self.holder)
            else:
                log.debug("blob sweep: another process holds the lease; local files only")
            if not self._stopping.is_set():
                self._local(now, records, report)
            self.passes += 1
            return report

    def _shared(self, now: float, report: SweepReport) -> dict[str, tuple[int, Doc | None]]:
        store = self.store
        shas = set(store.blob_ids()) | {k.removeprefix("blob/") for k in store.keys("blob/")}
        # Records first, documents second: a document committed after this read moved its record.
        records = {sha: store.read(f"blob/{sha}") for sha in sorted(shas)}
        referenced = self.registry.referenced_blobs()
        marks: Changes = {}
        for sha, (rev, doc) in records.items():
            if sha in referenced:
                report.kept += 1
                continue
            since = (doc or {}).get(MARK)
            if since is None:
                marks[f"blob/{sha}"] = (rev, {**(doc or {}), MARK: now})
            elif since <= now - self.grace_s and not self._stopping.is_set():
                if store.delete_blob(sha, rev):
                    report.deleted.append(sha)
                    records[sha] = (rev + 1, None)
            else:
                report.kept += 1
        if marks and not store.write(marks):  # a deploy moved one of them: mark the rest one by one
            marks = {key: change for key, change in marks.items() if store.write({key: change})}
        report.marked = sorted(key.removeprefix("blob/") for key in marks)
        for key, (rev, doc) in marks.items():
            records[key.removeprefix("blob/")] = (rev + 1, doc)
        if report.marked or report.deleted:
            log.info(
                "blob sweep: %d unreferenced blobs marked, %d deleted (%s)",
                len(report.marked),
                len(report.deleted),
                ", ".join(sha[:12] for sha in report.deleted) or "none",
            )
        return records

    def _local(self, now: float, records: dict[str, tuple[int, Doc | None]], report: SweepReport) -> None:
        referenced = self.registry.referenced_blobs() | self.registry.config_blobs()
        before = now - self.grace_s

        def keep(sha: str) -> bool:
            """Named by a document, or its record is live and not marked for longer than grace."""
            if sha in referenced:
                return True
            _, doc = records[sha] if sha in records else self.store.read(f"blob/{sha}")
            return doc is not None and doc.get(MARK, now) > before

        files = self.store.local_files()
        compiled = self.compiled_dir
        # A symlinked compile cache is shared with other data directories (the tests and benches
        # share one per machine), whose registries this one cannot see: it is not ours to prune.
        if compiled is not None and compiled.is_dir() and not compiled.is_symlink():
            files += [p for p in compiled.iterdir() if _ARTIFACT.fullmatch(p.name)]
        report.local += _prune(files, keep, before)
        if report.local:
            log.info("blob sweep: removed %d local files (%s)", len(report.local), _names(report.local))

    # -- in the background ---------------------------------------------------------------------

    def start(self) -> None:
        """Sweep every `interval_s` (times 0.75-1.25, so processes and nodes drift apart)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="edgefn-blob-sweep")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s * random.uniform(0.75, 1.25))
            try:
                await asyncio.to_thread(self.sweep)
            except Exception as exc:  # the next pass tries again; the blobs are not going anywhere
                log.warning("blob sweep failed, next pass in about %.0f s: %s: %s", self.interval_s,
                            type(exc).__name__, exc)  # fmt: skip

    async def aclose(self) -> None:
        """Stop the background passes; waits for a pass in progress to end its current step."""
        self._stopping.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):  # the cancellation asked for above
                await self._task
            self._task = None
        await asyncio.to_thread(self._wait_idle)

    def _wait_idle(self) -> None:
        with self._busy:
            return


def _prune(paths: list[Path], keep: Callable[[str], bool], before: float) -> list[Path]:
    """Remove the files last written before `before`, except finished ones (a blob's copy, a
    compiled artifact) of code `keep` wants; temporaries of interrupted copies and compiles go by
    age alone."""
    removed: list[Path] = []
    for path in paths:
        finished = _FINISHED.fullmatch(path.name)
        if finished is not None and keep(finished.group(1)):
            continue
        try:
            if path.stat().st_mtime < before:
                path.unlink()
                removed.append(path)
        except FileNotFoundError:  # another process of this node removed it first
            continue
    return removed


def _names(paths: list[Path]) -> str:
    shown = ", ".join(p.name[:12] for p in paths[:5])
    return shown + (f" and {len(paths) - 5} more" if len(paths) > 5 else "")


__all__ = ["BlobSweeper", "SweepReport"]
