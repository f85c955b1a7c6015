"""The Redis registry store on a real redis-server: compare-and-set, revisions and their notices,
blobs fetched by hash, and the registry's rules over it seen from two nodes."""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from edge.sync import ControlPlane, ControlPlaneError
from edge.sync_registry import RedisRegistryStore
from gateway.functions.registry import FunctionConfig, Registry, open_registry
from routes.config import Node


def store(url: str, data_dir: Path) -> RedisRegistryStore:
    return RedisRegistryStore(ControlPlane.parse(url), data_dir)


def test_write_is_all_or_nothing(redis_url: str, tmp_path: Path) -> None:
    s = store(redis_url, tmp_path)
    assert s.write({"a": (0, {"n": 1}), "b": (0, {"n": 1})})
    assert s.revision() == 1
    # b's expected revision is stale: a must not change either
    assert not s.write({"a": (1, {"n": 2}), "b": (0, {"n": 2})})
    assert s.read("a") == (1, {"n": 1}) and s.read("b") == (1, {"n": 1})
    assert s.revision() == 1
    assert s.write({"a": (1, None)})
    assert s.read("a") == (2, None)  # a tombstone keeps counting
    assert not s.write({"a": (0, {"n": 3})})
    assert s.keys("") == ["b"]
    assert s.read("never") == (0, None)


def test_keys_prefix_is_literal(redis_url: str, tmp_path: Path) -> None:
    s = store(redis_url, tmp_path)
    s.write({"url/a_b": (0, {}), "url/axb": (0, {}), "url%/x": (0, {}), "urm": (0, {})})
    assert s.keys("url/a_") == ["url/a_b"]
    assert s.keys("url%") == ["url%/x"]
    assert s.keys("url/") == ["url/a_b", "url/axb"]


def test_each_write_publishes_the_new_revision(
    redis_url: str, tmp_path: Path, redis_client: redis.Redis
) -> None:
    pubsub = redis_client.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe("edgefn:notice:registry")
    s = store(redis_url, tmp_path)
    s.write({"a": (0, {})})
    assert not s.write({"a": (0, {})})  # a refused write says nothing
    s.write({"a": (1, {"x": 1})})
    heard: list[bytes] = []
    deadline = time.monotonic() + 10
    while len(heard) < 2 and time.monotonic() < deadline:
        message = pubsub.get_message(timeout=1.0)
        if message is not None:
            heard.append(message["data"])
    assert heard == [b'{"revision":1}', b'{"revision":2}']


def test_blobs_are_fetched_once_by_another_node_and_checked(
    redis_url: str, tmp_path: Path, redis_client: redis.Redis
) -> None:
    data = b"\0asm component bytes"
    sha = hashlib.sha256(data).hexdigest()
    source = tmp_path / "up.wasm"
    source.write_bytes(data)
    a, b = store(redis_url, tmp_path / "a"), store(redis_url, tmp_path / "b")
    a.put_blob(sha, source)
    assert a.blob_path(sha).read_bytes() == data  # a keeps its own copy
    local = tmp_path / "b" / "components" / f"{sha}.wasm"
    assert not local.exists()
    assert b.blob_path(sha) == local and local.read_bytes() == data
    # a blob that does not match its name is refused, not cached
    bad = hashlib.sha256(b"other").hexdigest()
    redis_client.set(f"edgefn:blob:{bad}", b"tampered")
    with pytest.raises(ControlPlaneError, match="does not match its hash"):
        b.blob_path(bad)
    assert not (tmp_path / "b" / "components" / f"{bad}.wasm").exists()
    with pytest.raises(FileNotFoundError, match="neither in"):
        b.blob_path(hashlib.sha256(b"missing").hexdigest())
    with pytest.raises(ValueError, match="not a sha256"):
        b.blob_path("../../etc/passwd")


def test_a_blob_asked_for_at_once_by_a_nodes_workers_is_fetched_once(redis_url: str, tmp_path: Path) -> None:
    """A deploy has every worker's warm-up and first request ask for the new blob together; the
    node fetches (and fsyncs) it once. Two stores on one data_dir stand for two workers."""
    data = bytes(range(256)) * 40_000  # 10 MB: long enough to fetch that the others arrive meanwhile
    sha = hashlib.sha256(data).hexdigest()
    source = tmp_path / "up.wasm"
    source.write_bytes(data)
    store(redis_url, tmp_path / "a").put_blob(sha, source)
    workers = [store(redis_url, tmp_path / "b"), store(redis_url, tmp_path / "b")]
    gets: list[str] = []
    for w in workers:
        real_get = w.redis.get

        def counted(key: str, real_get: Callable[[str], object] = real_get) -> object:
            gets.append(key)
            return real_get(key)

        w.redis.get = counted  # type: ignore[method-assign]
    start = threading.Barrier(6)
    paths: list[Path] = []

    def ask(w: RedisRegistryStore) -> None:
        start.wait()
        paths.append(w.blob_path(sha))

    threads = [threading.Thread(target=ask, args=(workers[i % 2],)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(paths) == 6 and len(set(paths)) == 1 and paths[0].read_bytes() == data
    assert gets == [f"edgefn:blob:{sha}"]
    assert [p.name for p in (tmp_path / "b" / "components").iterdir()] == [f"{sha}.wasm"]  # no lock left


def test_concurrent_changes_lose_no_update(redis_url: str, tmp_path: Path) -> None:
    stores = [store(redis_url, tmp_path / f"n{i}") for i in range(4)]

    def bump(s: RedisRegistryStore) -> None:
        for _ in range(25):
            while True:
                rev, doc = s.read("counter")
                if s.write({"counter": (rev, {"n": (doc or {"n": 0})["n"] + 1})}):
                    break

    threads = [threading.Thread(target=bump, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert stores[0].read("counter") == (100, {"n": 100})


def test_a_deploy_on_one_node_is_resolved_on_another(redis_url: str, tmp_path: Path) -> None:
    code = tmp_path / "v1.wasm"
    code.write_bytes(b"\0asm-fake:v1")
    a = open_registry(Node(data_dir=tmp_path / "a", control_plane=redis_url), {})
    b = open_registry(Node(data_dir=tmp_path / "b", control_plane=redis_url), {})
    assert isinstance(a, Registry) and isinstance(b.store, RedisRegistryStore)
    before = b.revision()
    a.deploy("hello", code, FunctionConfig(memory_mb=256))
    a.publish("hello")
    a.set_alias("hello", "live", 1)
    assert b.revision() > before
    resolved = b.resolve("hello:live")
    assert resolved.choices == (("1", 1.0),)
    info = b.get("hello")
    assert info.config.memory_mb == 256
    assert b.blob_path(info.code_sha256).read_bytes() == b"\0asm-fake:v1"
    a.close()
    b.close()
