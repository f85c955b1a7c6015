"""The blob sweep over the Redis store on a real redis-server, two nodes each with its own data
directory: Redis blobs no document names go (after the grace period), with their local copies on
every node; named ones never do; one node at a time sweeps Redis (a lease); a deploy in flight keeps
its blob whatever the interleaving."""

from __future__ import annotations

import hashlib
import os
import threading
import time
from pathlib import Path
from typing import Any

import redis

from edge.sync import ControlPlane
from edge.sync_registry import RedisRegistryStore
from gateway.functions.registry import Registry
from gateway.functions.registry_sweep import BlobSweeper
from tests.registry.test_blob_sweep import Clock, HoldsFirstBlobWrite

GRACE = 100.0


def node(url: str, data_dir: Path) -> Registry:
    return Registry(RedisRegistryStore(ControlPlane.parse(url), data_dir))


def code(directory: Path, text: str) -> tuple[Path, str]:
    path = directory / f"{text}.wasm"
    path.write_bytes(b"\0asm-fake:" + text.encode())
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


def age(path: Path, seconds: float = 10 * GRACE) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


def sweeper(registry: Registry, clock: Clock, grace_s: float = GRACE) -> BlobSweeper:
    store = registry.store
    assert isinstance(store, RedisRegistryStore)
    compiled = store.blob_dir.parent / "compiled"
    return BlobSweeper(registry, compiled_dir=compiled, grace_s=grace_s, clock=clock)


def test_unnamed_blobs_leave_redis_and_every_nodes_copies(
    redis_url: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    a, b = node(redis_url, tmp_path / "a"), node(redis_url, tmp_path / "b")
    gone_path, gone = code(tmp_path, "gone")
    kept_path, kept = code(tmp_path, "kept")
    a.deploy("gone", gone_path)
    a.deploy("kept", kept_path)
    copies = {sha: b.blob_path(sha) for sha in (gone, kept)}  # node B fetched both
    for registry in (a, b):
        store = registry.store
        assert isinstance(store, RedisRegistryStore)
        compiled = store.blob_dir.parent / "compiled"
        compiled.mkdir()
        for sha in (gone, kept):
            (compiled / f"{sha}-0123abcd.cwasm").write_bytes(b"compiled")
            age(compiled / f"{sha}-0123abcd.cwasm")
            age(store.blob_path_local(sha))
    clock = Clock()
    sweep_a, sweep_b = sweeper(a, clock), sweeper(b, clock)
    a.delete("gone")

    assert sweep_a.sweep().marked == [gone]
    assert sweep_b.sweep().local == []  # marked less than the grace period ago: kept everywhere
    assert redis_client.exists(f"edgefn:blob:{gone}")

    clock.advance(2 * GRACE)
    report = sweep_a.sweep()
    assert report.deleted == [gone]
    assert not redis_client.exists(f"edgefn:blob:{gone}")
    assert a.store.read(f"blob/{gone}")[1] is None  # a tombstone
    assert sorted(p.name for p in report.local) == [f"{gone}-0123abcd.cwasm", f"{gone}.wasm"]

    report = sweep_b.sweep()  # node B: its copy and its artifact
    assert sorted(p.name for p in report.local) == [f"{gone}-0123abcd.cwasm", f"{gone}.wasm"]
    assert not copies[gone].exists() and copies[kept].exists()
    assert (b.store.blob_dir.parent / "compiled" / f"{kept}-0123abcd.cwasm").exists()
    assert a.store.blob_ids() == [kept]
    assert redis_client.get(f"edgefn:blob:{kept}") == kept_path.read_bytes()
    a.close()
    b.close()


def test_named_blobs_are_never_deleted(redis_url: str, tmp_path: Path) -> None:
    a = node(redis_url, tmp_path / "a")
    shas = []
    for i in range(3):
        path, sha = code(tmp_path, f"v{i}")
        shas.append(sha)
        a.deploy("f", path)
        if i < 2:
            a.publish("f")
    a.set_alias("f", "live", 1)
    clock = Clock()
    sweep = sweeper(a, clock)
    for _ in range(3):
        report = sweep.sweep()
        assert report.leased and report.marked == [] and report.deleted == []
        clock.advance(10 * GRACE)
    assert a.store.blob_ids() == sorted(shas)
    a.close()


def test_one_node_at_a_time_sweeps_redis(redis_url: str, redis_client: redis.Redis, tmp_path: Path) -> None:
    a, b = node(redis_url, tmp_path / "a"), node(redis_url, tmp_path / "b")
    path, sha = code(tmp_path, "x")
    a.deploy("f", path)
    a.delete("f")
    assert a.store.lease("blob-sweep", "node-a", 300)
    assert not b.store.lease("blob-sweep", "node-b", 300)
    report = sweeper(b, Clock(), grace_s=0.0).sweep()
    assert not report.leased and report.marked == []
    assert redis_client.pttl("edgefn:lease:blob-sweep") > 0  # held with a TTL: a dead holder's runs out
    a.store.release("blob-sweep", "node-b")  # not the holder: nothing happens
    assert redis_client.get("edgefn:lease:blob-sweep") == b"node-a"
    a.store.release("blob-sweep", "node-a")
    report = sweeper(b, Clock(), grace_s=0.0).sweep()
    assert report.leased and report.marked == [sha]
    assert not redis_client.exists("edgefn:lease:blob-sweep")  # released after the pass
    a.close()
    b.close()


def test_a_write_naming_a_missing_blob_changes_nothing(redis_url: str, tmp_path: Path) -> None:
    store = RedisRegistryStore(ControlPlane.parse(redis_url), tmp_path)
    missing = "0" * 64
    assert not store.write({"a": (0, {"n": 1})}, blobs=[missing])
    assert store.read("a") == (0, None) and store.revision() == 0
    path, sha = code(tmp_path, "there")
    store.put_blob(sha, path)
    assert store.write({"a": (0, {"n": 1})}, blobs=[sha])
    store.close()


class HeldStore(HoldsFirstBlobWrite, RedisRegistryStore):
    pass


def test_a_deploy_whose_blob_was_swept_before_its_commit_stores_it_again(
    redis_url: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    """No grace period: node B's sweep deletes the blob node A's deploy is about to name."""
    held = HeldStore(ControlPlane.parse(redis_url), tmp_path / "a")
    path, sha = code(tmp_path, "in-flight")
    result: list[Any] = []
    thread = threading.Thread(target=lambda: result.append(Registry(held).deploy("f", path)))
    thread.start()
    assert held.reached.wait(60)
    b = node(redis_url, tmp_path / "b")
    sweep = sweeper(b, Clock(), grace_s=0.0)
    assert sweep.sweep().marked == [sha]
    assert sweep.sweep().deleted == [sha]
    assert not redis_client.exists(f"edgefn:blob:{sha}")
    held.go.set()
    thread.join(60)
    assert b.get("f").code_sha256 == sha, result
    assert held.attempts == 2
    assert redis_client.get(f"edgefn:blob:{sha}") == path.read_bytes()  # stored again
    assert sweep.sweep().deleted == []
    b.close()
    held.close()


def test_blob_listing_takes_the_prefix_literally(redis_url: str, tmp_path: Path) -> None:
    """A fleet whose prefix holds glob characters sees its own blobs only (SCAN MATCH is a glob)."""
    star = RedisRegistryStore(ControlPlane.parse(f"{redis_url}?prefix=a*:"), tmp_path / "star")
    other = RedisRegistryStore(ControlPlane.parse(f"{redis_url}?prefix=ab:"), tmp_path / "other")
    mine_path, mine = code(tmp_path, "mine")
    theirs_path, theirs = code(tmp_path, "theirs")
    star.put_blob(mine, mine_path)
    other.put_blob(theirs, theirs_path)
    assert star.blob_ids() == [mine] and other.blob_ids() == [theirs]
    star.close()
    other.close()
