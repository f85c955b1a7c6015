"""The blob sweep over the real SQLite store: what no document names goes (blob, record, compiled
artifact), what one names never does, a deploy in flight keeps its blob whatever the interleaving
(driven explicitly: a write held until the sweep has run), and a kill -9 in the middle of a sweep
leaves a registry that is consistent and that a deploy of the same code repairs."""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import signal
import sqlite3
import subprocess
import threading
import time
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

from gateway.functions.registry import Registry
from gateway.functions.registry_sqlite import SqliteStore
from gateway.functions.registry_sweep import BlobSweeper
from tests.registry.test_durability import assert_consistent, kill_at_random, worker

GRACE = 100.0
ROUNDS = 8


class Clock:
    """Real time plus what the test adds, so a test can pass a grace period without waiting."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def artifact(data_dir: Path, sha256: str, age_s: float = 10 * GRACE) -> Path:
    """A compiled artifact as the runtime names it, with its import plan beside it, both last
    written `age_s` ago; the artifact's path."""
    path = data_dir / "compiled" / f"{sha256}-0123abcd.cwasm"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"compiled " + sha256.encode())
    path.with_suffix(".imports").write_bytes(b"plan " + sha256.encode())
    then = time.time() - age_s
    os.utime(path, (then, then))
    os.utime(path.with_suffix(".imports"), (then, then))
    return path


def sweeper(registry: Registry, clock: Clock, grace_s: float = GRACE) -> BlobSweeper:
    store = registry.store
    assert isinstance(store, SqliteStore)
    return BlobSweeper(registry, compiled_dir=store.data_dir / "compiled", grace_s=grace_s, clock=clock)


def test_a_deleted_functions_blob_and_artifact_go_after_the_grace_period(
    registry: Registry, code: Callable[[str], Path]
) -> None:
    store = registry.store
    assert isinstance(store, SqliteStore)
    gone, kept = sha(code("gone")), sha(code("kept"))
    registry.deploy("gone", code("gone"))
    registry.deploy("kept", code("kept"))
    gone_artifact, kept_artifact = artifact(store.data_dir, gone), artifact(store.data_dir, kept)
    clock = Clock()
    sweep = sweeper(registry, clock)
    assert sweep.sweep().marked == []  # both named: nothing to do
    registry.delete("gone")

    first = sweep.sweep()
    assert first.marked == [gone] and first.deleted == []
    assert store.blob_path(gone).exists() and gone_artifact.exists()  # within the grace period

    clock.advance(GRACE / 2)
    assert sweep.sweep().deleted == []

    clock.advance(GRACE)
    second = sweep.sweep()
    assert second.deleted == [gone]
    assert not store.blob_path(gone).exists() and not gone_artifact.exists()
    assert gone_artifact in second.local and gone_artifact.with_suffix(".imports") in second.local
    rev, doc = store.read(f"blob/{gone}")
    assert doc is None and rev == 3  # deployed, marked, deleted: a tombstone
    assert store.blob_ids() == [kept]
    assert sha(store.blob_path(kept)) == kept and kept_artifact.exists()
    assert kept_artifact.with_suffix(".imports").exists()  # the plan goes with its artifact only
    assert_consistent(store.data_dir)


def test_referenced_blobs_are_never_deleted(registry: Registry, code: Callable[[str], Path]) -> None:
    store = registry.store
    assert isinstance(store, SqliteStore)
    shas = [sha(code(f"v{i}")) for i in range(1, 5)]
    for i in range(1, 5):
        registry.deploy("f", code(f"v{i}"))
        if i < 4:
            registry.publish("f")  # versions 1-3; $LATEST is v4
    registry.set_alias("f", "live", 2, {3: 0.5})
    for s in shas:
        artifact(store.data_dir, s)
    clock = Clock()
    sweep = sweeper(registry, clock)
    for _ in range(4):
        report = sweep.sweep()
        assert report.marked == [] and report.deleted == [] and report.local == []
        clock.advance(10 * GRACE)
    assert store.blob_ids() == sorted(shas)

    registry.delete_version("f", 1)  # version 1 was the only document naming v1
    sweep.sweep()
    clock.advance(10 * GRACE)
    assert sweep.sweep().deleted == [shas[0]]
    assert store.blob_ids() == sorted(shas[1:])
    for s in shas[1:]:
        assert sha(store.blob_path(s)) == s
        assert (store.data_dir / "compiled" / f"{s}-0123abcd.cwasm").exists()
    assert_consistent(store.data_dir)


def test_code_deployed_again_after_its_mark_is_kept(registry: Registry, code: Callable[[str], Path]) -> None:
    """A rollback to code that was about to go: the deploy drops the mark, the sweep keeps it."""
    store = registry.store
    old = sha(code("old"))
    registry.deploy("f", code("old"))
    registry.deploy("f", code("new"))
    clock = Clock()
    sweep = sweeper(registry, clock)
    assert sweep.sweep().marked == [old]
    registry.deploy("f", code("old"))
    _, doc = store.read(f"blob/{old}")
    assert doc == {"size": code("old").stat().st_size}  # the mark is gone
    clock.advance(10 * GRACE)
    report = sweep.sweep()
    assert report.deleted == [] and report.marked == [sha(code("new"))]
    assert sha(store.blob_path(old)) == old


def test_leftovers_without_a_record_are_swept_too(registry: Registry, code: Callable[[str], Path]) -> None:
    """A blob stored before records existed, or by a deploy killed before its commit, has no record;
    a temporary file of an interrupted copy, or compile, is removed once old."""
    store = registry.store
    assert isinstance(store, SqliteStore)
    orphan = sha(code("orphan"))
    store.put_blob(orphan, code("orphan"))
    stale = store.blob_dir / f".{orphan[:16]}.abc.tmp"
    fresh = store.blob_dir / ".0123456789abcdef.def.tmp"
    half_compiled = store.data_dir / "compiled" / f"{orphan}-0123abcd.tmp77.88"
    half_compiled.parent.mkdir(parents=True)
    for path in (stale, fresh, half_compiled):
        path.write_bytes(b"partial")
    then = time.time() - 10 * GRACE
    os.utime(stale, (then, then))
    os.utime(half_compiled, (then, then))
    clock = Clock()
    sweep = sweeper(registry, clock)
    first = sweep.sweep()
    assert first.marked == [orphan]
    assert sorted(first.local) == sorted([stale, half_compiled])
    assert fresh.exists()
    clock.advance(10 * GRACE)
    assert sweep.sweep().deleted == [orphan]
    assert store.blob_ids() == []


def test_a_shared_compile_cache_is_left_alone(
    registry: Registry, code: Callable[[str], Path], tmp_path: Path
) -> None:
    """data_dir/compiled as a symlink: other data directories' registries may name what is in it."""
    store = registry.store
    assert isinstance(store, SqliteStore)
    shared = tmp_path / "shared-compiled"
    shared.mkdir()
    (store.data_dir / "compiled").symlink_to(shared, target_is_directory=True)
    gone = sha(code("gone"))
    registry.deploy("gone", code("gone"))
    registry.delete("gone")
    old = artifact(store.data_dir, gone)
    sweep = sweeper(registry, Clock(), grace_s=0.0)
    sweep.sweep()
    report = sweep.sweep()
    assert report.deleted == [gone] and report.local == [] and old.exists()


class HoldsFirstBlobWrite:
    """Mixed into a store: holds the first write that names a blob (a deploy's commit) until the
    test lets it go."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.reached = threading.Event()
        self.go = threading.Event()
        self.attempts = 0

    def write(
        self, changes: dict[str, tuple[int, dict[str, Any] | None]], blobs: Collection[str] = ()
    ) -> bool:
        if blobs:
            self.attempts += 1
            if self.attempts == 1:
                self.reached.set()
                assert self.go.wait(60), "the test never let the held write go"
        return super().write(changes, blobs)  # type: ignore[misc]


class HeldStore(HoldsFirstBlobWrite, SqliteStore):
    pass


def deploy_held(data_dir: Path, name: str, path: Path) -> tuple[HeldStore, threading.Thread, list[Any]]:
    """Start a deploy in a thread, another connection as another process would; it stops just
    before its commit, after it read the blob's record and stored the blob."""
    store = HeldStore(data_dir)
    result: list[Any] = []

    def run() -> None:
        try:
            result.append(Registry(store).deploy(name, path))
        except BaseException as exc:
            result.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    assert store.reached.wait(60)
    return store, thread, result


def test_a_blob_stored_by_a_deploy_not_yet_committed_survives(
    registry: Registry, code: Callable[[str], Path]
) -> None:
    store = registry.store
    assert isinstance(store, SqliteStore)
    new = sha(code("in-flight"))
    held, thread, result = deploy_held(store.data_dir, "f", code("in-flight"))
    assert store.blob_ids() == [new] and registry.functions() == []
    clock = Clock()
    sweep = sweeper(registry, clock)
    assert sweep.sweep().marked == [new]  # stored, named by nothing yet
    assert sweep.sweep().deleted == []  # younger than the grace period
    held.go.set()
    thread.join(60)
    assert registry.get("f").code_sha256 == new, result
    assert held.attempts == 2  # the mark moved the record: the deploy decided again
    clock.advance(10 * GRACE)
    assert sweep.sweep().deleted == []
    assert sha(store.blob_path(new)) == new
    held.close()


def test_a_deploy_whose_blob_was_swept_before_its_commit_stores_it_again(
    registry: Registry, code: Callable[[str], Path]
) -> None:
    """The worst case, no grace period at all: the sweep deletes the blob the deploy is about to
    name; the deploy's write finds the record moved, and it stores the blob again."""
    store = registry.store
    assert isinstance(store, SqliteStore)
    new = sha(code("in-flight"))
    held, thread, result = deploy_held(store.data_dir, "f", code("in-flight"))
    sweep = sweeper(registry, Clock(), grace_s=0.0)
    assert sweep.sweep().marked == [new]
    assert sweep.sweep().deleted == [new]
    assert not store.blob_path(new).exists()
    held.go.set()
    thread.join(60)
    assert registry.get("f").code_sha256 == new, result
    assert held.attempts == 2
    assert sha(store.blob_path(new)) == new
    assert sweep.sweep().deleted == []  # named now
    assert_consistent(store.data_dir)
    held.close()


class HeldDelete(SqliteStore):
    """Holds `delete_blob` until the test lets it go: the sweep has decided, not yet deleted."""

    def __init__(self, data_dir: Path) -> None:
        super().__init__(data_dir)
        self.reached = threading.Event()
        self.go = threading.Event()

    def delete_blob(self, sha256: str, expected: int) -> bool:
        self.reached.set()
        assert self.go.wait(60), "the test never let the held delete go"
        return super().delete_blob(sha256, expected)


def test_a_deploy_committed_after_the_sweep_decided_keeps_the_blob(
    registry: Registry, code: Callable[[str], Path]
) -> None:
    store = registry.store
    assert isinstance(store, SqliteStore)
    old = sha(code("old"))
    registry.deploy("f", code("old"))
    registry.deploy("f", code("new"))
    sweep_store = HeldDelete(store.data_dir)
    slow = Registry(sweep_store)
    sweep = BlobSweeper(slow, grace_s=0.0)
    assert sweep.sweep().marked == [old]  # the first pass only marks: nothing held
    reports: list[Any] = []
    thread = threading.Thread(target=lambda: reports.append(sweep.sweep()))
    thread.start()
    assert sweep_store.reached.wait(60)  # it read the records and the documents: `old` is unnamed
    registry.deploy("g", code("old"))  # a rollback elsewhere, committed now
    sweep_store.go.set()
    thread.join(60)
    assert reports[0].deleted == []
    assert sha(store.blob_path(old)) == old
    assert_consistent(store.data_dir)
    slow.close()


def sweep_worker(*args: str) -> subprocess.Popen[str]:
    return worker(*args, module="tests.registry.sweep_workers")


def test_a_kill_between_unlink_and_commit_is_repaired_by_the_next_deploy(
    registry: Registry, code: Callable[[str], Path]
) -> None:
    """The sweep's process dies inside delete_blob's transaction, after the file is gone: the
    record rolls back to "exists", and a deploy that had already checked the file (held before
    its commit) is refused by the missing blob and stores it again."""
    store = registry.store
    assert isinstance(store, SqliteStore)
    old = sha(code("old"))
    registry.deploy("f", code("old"))
    registry.deploy("f", code("new"))
    BlobSweeper(registry, grace_s=0.0).sweep()  # marks `old`
    held, thread, result = deploy_held(store.data_dir, "g", code("old"))  # found the file there
    rev, doc = store.read(f"blob/{old}")
    child = sweep_worker("crash-delete", str(store.data_dir))
    out, err = child.communicate(timeout=120)
    assert child.returncode == -signal.SIGKILL, (out, err)
    assert out == f"unlinked {old}\n"
    assert store.read(f"blob/{old}") == (rev, doc)  # rolled back with the process
    assert not store.blob_path(old).exists()
    assert_consistent(store.data_dir)  # nothing names it yet
    held.go.set()
    thread.join(60)
    assert registry.get("g").code_sha256 == old, result
    assert held.attempts == 2
    assert sha(store.blob_path(old)) == old
    assert_consistent(store.data_dir)
    held.close()


def test_sigkill_during_sweeps_leaves_a_consistent_registry(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    rng = random.Random(20261201)
    for round_ in range(ROUNDS):
        kill_at_random(sweep_worker("churn", str(data_dir), str(round_)), rng)
        assert_consistent(data_dir)
    # Whatever the kills left behind, two passes leave exactly the named blobs (once the lease of
    # a worker killed mid-pass has run out: the workers take it for 1 s).
    registry = Registry(SqliteStore(data_dir))
    sweep = BlobSweeper(registry, grace_s=0.0)
    deadline = time.monotonic() + 60
    while not sweep.sweep().leased:
        assert time.monotonic() < deadline, "the lease of a killed worker never ran out"
        time.sleep(0.1)
    assert sweep.sweep().leased
    assert set(registry.store.blob_ids()) == registry.referenced_blobs()
    assert_consistent(data_dir)
    registry.close()
    with sqlite3.connect(data_dir / "registry.sqlite3") as db:
        (deleted,) = db.execute(
            "SELECT count(*) FROM docs WHERE key LIKE 'blob/%' AND doc IS NULL"
        ).fetchone()
    assert deleted > 5, "the churn's sweeps deleted (almost) nothing"


def test_one_process_at_a_time_sweeps_the_blobs(registry: Registry, code: Callable[[str], Path]) -> None:
    store = registry.store
    registry.deploy("f", code("a"))
    registry.delete("f")
    other = BlobSweeper(registry, grace_s=0.0)
    assert store.lease("blob-sweep", "someone-else", 300)
    report = other.sweep()
    assert not report.leased and report.marked == []  # local files only
    store.release("blob-sweep", "someone-else")
    assert store.lease("blob-sweep", "someone-else", -1)  # a holder that died: its lease ran out
    report = other.sweep()
    assert report.leased and report.marked == [sha(code("a"))]
    assert store.lease("blob-sweep", "someone-else", 300)  # released at the end of the pass


def test_the_background_task_sweeps_by_itself(registry: Registry, code: Callable[[str], Path]) -> None:
    store = registry.store
    registry.deploy("f", code("a"))
    registry.delete("f")
    sweep = BlobSweeper(registry, grace_s=0.0, interval_s=0.05)

    async def run() -> None:
        sweep.start()
        deadline = time.monotonic() + 60
        while store.blob_ids() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await sweep.aclose()

    asyncio.run(run())
    assert store.blob_ids() == [] and sweep.passes >= 2
