"""The function registry's documents and component blobs in Redis, shared by a fleet.

Satisfies `gateway.functions.registry.RegistryStore` structurally (edge does not import gateway):
the rules stay in `Registry`; this only stores.

    <prefix>reg:doc:<key>      hash {rev, doc}: a document and its revision; a deleted document
                               keeps its revision (a tombstone), so a revision never goes back
    <prefix>reg:keys           sorted set of the live document keys (all score 0, read by prefix)
    <prefix>reg:revision       the store-wide revision, bumped by every successful write
    <prefix>blob:<sha256>      component bytes, content-addressed
    <prefix>notice:registry    channel: {"revision": N} after every write
    <prefix>lease:<name>       a lease (the blob sweep's: one node at a time), holder id with a TTL

`write` is one Lua script: it checks every expected revision and either changes everything (and
bumps the revision and publishes it) or nothing. Blobs are put before the document naming them
is written, as in the SQLite store, and fetched by any node on first use into
`data_dir/components/<sha256>.wasm` (checked against the hash; written to a temporary file,
fsync'd and renamed), so a node compiles from a local file and fetches each component once.
A write given `blobs` applies only if those blobs exist, checked in the same script; `delete_blob`
deletes a blob in one script with the move of its record `blob/<sha256>`, so a write naming a blob
can never commit after its deletion (docs/functions.md, "Unreferenced blobs").
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import tempfile
import time
from collections.abc import Callable, Collection, Iterator
from pathlib import Path
from typing import Any, TypeVar, cast

import redis

from edge.errors import ControlPlaneError
from edge.sync import ControlPlane

log = logging.getLogger("edgefn.fleet.registry")

_SHA256 = re.compile(r"[0-9a-f]{64}")
WARN_EVERY_S = 10.0
T = TypeVar("T")

# KEYS: revision, key index, the documents, then blobs that must exist. ARGV: channel, the number
# of documents, then (name, expected, doc or '') per document. Answers the new store revision, or 0
# when an expected revision did not hold or a blob is missing.
_WRITE = """
local n = tonumber(ARGV[2])
for i = 1, n do
  local rev = tonumber(redis.call('HGET', KEYS[i + 2], 'rev') or '0')
  if rev ~= tonumber(ARGV[(i - 1) * 3 + 4]) then return 0 end
end
for i = n + 3, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 0 then return 0 end
end
for i = 1, n do
  local name, expected, doc = ARGV[(i - 1) * 3 + 3], tonumber(ARGV[(i - 1) * 3 + 4]), ARGV[(i - 1) * 3 + 5]
  if doc == '' then
    redis.call('HSET', KEYS[i + 2], 'rev', expected + 1)
    redis.call('HDEL', KEYS[i + 2], 'doc')
    redis.call('ZREM', KEYS[2], name)
  else
    redis.call('HSET', KEYS[i + 2], 'rev', expected + 1, 'doc', doc)
    redis.call('ZADD', KEYS[2], 0, name)
  end
end
local revision = redis.call('INCR', KEYS[1])
redis.call('PUBLISH', ARGV[1], cjson.encode({revision = revision}))
return revision
"""

# KEYS: the blob's record, the blob, the key index. ARGV: expected revision, the record's name.
# Answers 1 when the blob and its record went together, 0 when the record had moved.
_DELETE_BLOB = """
local rev = tonumber(redis.call('HGET', KEYS[1], 'rev') or '0')
if rev ~= tonumber(ARGV[1]) then return 0 end
redis.call('DEL', KEYS[2])
redis.call('HSET', KEYS[1], 'rev', rev + 1)
redis.call('HDEL', KEYS[1], 'doc')
redis.call('ZREM', KEYS[3], ARGV[2])
return 1
"""

# KEYS: the lease. ARGV: holder, TTL in ms. Takes a free lease or renews our own.
_LEASE = """
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
if holder then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class RedisRegistryStore:
    """`RegistryStore` over Redis; thread-safe (redis-py's connection pool)."""

    def __init__(self, plane: ControlPlane, data_dir: Path) -> None:
        self.plane = plane
        self.blob_dir = Path(data_dir) / "components"
        self.blob_dir.mkdir(parents=True, exist_ok=True)
        self.redis = plane.client()
        p = plane.prefix
        self._revision_key, self._index = f"{p}reg:revision", f"{p}reg:keys"
        self.channel = f"{p}notice:registry"
        self._write = self.redis.register_script(_WRITE)
        self._delete_blob = self.redis.register_script(_DELETE_BLOB)
        self._lease = self.redis.register_script(_LEASE)
        self._release = self.redis.register_script(_RELEASE)
        self._known: int | None = None
        self._warned = -WARN_EVERY_S
        self._call(self.redis.ping)

    def _call(self, fn: Callable[..., T], *args: Any) -> T:
        try:
            return fn(*args)
        except redis.RedisError as exc:
            raise ControlPlaneError(f"{self.plane.shown}: registry: {exc}") from exc

    def _doc_key(self, key: str) -> str:
        return f"{self.plane.prefix}reg:doc:{key}"

    def read(self, key: str) -> tuple[int, dict[str, Any] | None]:
        rev, doc = self._call(self.redis.hmget, self._doc_key(key), ["rev", "doc"])
        return int(rev or 0), (json.loads(doc) if doc else None)

    def write(
        self, changes: dict[str, tuple[int, dict[str, Any] | None]], blobs: Collection[str] = ()
    ) -> bool:
        """All or nothing: every key must still be at its expected revision and every blob in
        `blobs` must exist."""
        keys = [
            self._revision_key,
            self._index,
            *(self._doc_key(k) for k in changes),
            *(self._blob_key(self._sha(sha)) for sha in blobs),
        ]
        args: list[Any] = [self.channel, len(changes)]
        for key, (expected, doc) in changes.items():
            args += [key, expected, "" if doc is None else json.dumps(doc, sort_keys=True)]
        revision = self._call(lambda: self._write(keys=keys, args=args))
        if not revision:
            return False
        self._wait()
        return True

    def _wait(self) -> None:
        need = self.plane.wait_replicas
        if need > 0:
            got = int(self._call(self.redis.wait, need, int(self.plane.lease_s * 1000)))
            if got < need:
                raise ControlPlaneError(
                    f"{self.plane.shown}: only {got} of {need} replicas acknowledged the registry change"
                )

    def keys(self, prefix: str) -> list[str]:
        found = cast(
            "list[bytes]", self._call(self.redis.zrangebylex, self._index, f"[{prefix}", f"[{prefix}\xff")
        )
        return sorted(k.decode() for k in found)

    def revision(self) -> int:
        """The store revision; while Redis is unreachable, the last one read (so a node keeps
        serving what it has resolved and loaded; reads it has not cached fail with the reason)."""
        try:
            self._known = int(self.redis.get(self._revision_key) or 0)
        except redis.RedisError as exc:
            if self._known is None:
                raise ControlPlaneError(f"{self.plane.shown}: registry: {exc}") from exc
            now = time.monotonic()
            if now - self._warned >= WARN_EVERY_S:
                self._warned = now
                log.warning(
                    "registry: %s unreachable (%s); serving revision %d", self.plane.shown, exc, self._known
                )
        return self._known

    def put_blob(self, sha256: str, path: Path) -> None:
        """Store the component under its hash (once: an existing blob is left alone, and not sent
        again) and keep a local copy, so this node need not fetch what it just uploaded."""
        target = self.blob_path_local(sha256)
        if target.exists() and int(self._call(self.redis.exists, self._blob_key(sha256))):
            return
        data = Path(path).read_bytes()
        self._call(lambda: self.redis.set(self._blob_key(sha256), data, nx=True))
        self._wait()
        if not target.exists():
            self._write_local(target, data)

    def blob_path(self, sha256: str) -> Path:
        """The component as a local file, fetched from Redis (and checked) on first use: once for
        the node, though its workers' warm-ups and first requests ask for it at the same moment."""
        target = self.blob_path_local(sha256)
        if target.exists():
            return target
        with self._fetching(sha256):
            if target.exists():  # fetched by whoever held the lock before
                return target
            return self._fetch(sha256, target)

    @contextlib.contextmanager
    def _fetching(self, sha256: str) -> Iterator[None]:
        """One fetch of a blob at a time on this node (its workers share `blob_dir`): each fetch
        moves the whole component (tens of MB) and writes it with an fsync, and on a deploy every
        worker's warm-up and first request came for it at once, four copies on a two-worker node.
        Best effort: the lock file is removed after use, so one opened meanwhile may let a second
        fetch through, which only repeats the atomic write."""
        lock_path = self.blob_dir / f".{sha256}.lock"
        with lock_path.open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                lock_path.unlink(missing_ok=True)
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _fetch(self, sha256: str, target: Path) -> Path:
        data = cast("bytes | None", self._call(self.redis.get, self._blob_key(sha256)))
        if data is None:
            raise FileNotFoundError(
                f"component {sha256} is neither in {self.blob_dir} nor in the control plane"
            )
        if hashlib.sha256(data).hexdigest() != sha256:
            raise ControlPlaneError(
                f"component {sha256} fetched from the control plane does not match its hash"
            )
        self._write_local(target, data)
        return target

    def blob_path_local(self, sha256: str) -> Path:
        return self.blob_dir / f"{self._sha(sha256)}.wasm"

    @staticmethod
    def _sha(sha256: str) -> str:
        if not _SHA256.fullmatch(sha256):
            raise ValueError(f"{sha256!r} is not a sha256 hex digest")
        return sha256

    def blob_ids(self) -> list[str]:
        """The sha256 of every blob in Redis (SCAN, so Redis is never blocked by a long listing)."""
        start = len(self._blob_key(""))
        pattern = re.sub(r"([*?\[\]\\])", r"\\\1", self._blob_key("")) + "*"  # the prefix is literal
        found = self._call(lambda: list(self.redis.scan_iter(match=pattern, count=500)))
        return sorted(s for k in found if _SHA256.fullmatch(s := k.decode()[start:]))

    def delete_blob(self, sha256: str, expected: int) -> bool:
        """Delete the blob from Redis if its record `blob/<sha256>` is still at revision `expected`,
        in one script with the record's tombstone. Local copies are left to the sweep (`local_files`)."""
        key = f"blob/{sha256}"
        keys = [self._doc_key(key), self._blob_key(self._sha(sha256)), self._index]
        deleted = self._call(lambda: self._delete_blob(keys=keys, args=[expected, key]))
        if deleted:
            self._wait()
        return bool(deleted)

    def local_files(self) -> list[Path]:
        """Files a sweep may remove (docs/fleet.md): local copies of blobs, a cache (a blob still
        in Redis is fetched again when asked for), and temporaries of fetches a crash cut short."""
        return sorted(
            p
            for p in self.blob_dir.iterdir()
            if (p.suffix == ".wasm" and _SHA256.fullmatch(p.stem))
            or (p.name.startswith(".") and p.name.endswith(".tmp"))
        )

    def lease(self, name: str, holder: str, ttl_s: float) -> bool:
        """Take or renew the lease `name` for `ttl_s` seconds (Redis' clock); False while another
        holder has it."""
        key = f"{self.plane.prefix}lease:{name}"
        return bool(self._call(lambda: self._lease(keys=[key], args=[holder, max(1, int(ttl_s * 1000))])))

    def release(self, name: str, holder: str) -> None:
        key = f"{self.plane.prefix}lease:{name}"
        self._call(lambda: self._release(keys=[key], args=[holder]))

    def _blob_key(self, sha256: str) -> str:
        return f"{self.plane.prefix}blob:{sha256}"

    def _write_local(self, target: Path, data: bytes) -> None:
        fd, tmp = tempfile.mkstemp(dir=self.blob_dir, prefix=f".{target.stem[:16]}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def close(self) -> None:
        self.redis.close()


__all__ = ["RedisRegistryStore"]
