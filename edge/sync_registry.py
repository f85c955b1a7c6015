"""The function registry's documents and component blobs in Redis, shared by a fleet.

Satisfies `gateway.functions.registry.RegistryStore` structurally (edge does not import gateway):
the rules stay in `Registry`; this only stores.

    <prefix>reg:doc:<key>      hash {rev, doc}: a document and its revision; a deleted document
                               keeps its revision (a tombstone), so a revision never goes back
    <prefix>reg:keys           sorted set of the live document keys (all score 0, read by prefix)
    <prefix>reg:revision       the store-wide revision, bumped by every successful write
    <prefix>blob:<sha256>      component bytes, content-addressed
    <prefix>notice:registry    channel: {"revision": N} after every write

`write` is one Lua script: it checks every expected revision and either changes everything (and
bumps the revision and publishes it) or nothing. Blobs are put before the document naming them
is written, as in the SQLite store, and fetched by any node on first use into
`data_dir/components/<sha256>.wasm` (checked against the hash; written to a temporary file,
fsync'd and renamed), so a node compiles from a local file and fetches each component once.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import redis

from edge.errors import ControlPlaneError
from edge.sync import ControlPlane

log = logging.getLogger("edgefn.fleet.registry")

_SHA256 = re.compile(r"[0-9a-f]{64}")
WARN_EVERY_S = 10.0
T = TypeVar("T")

# KEYS: revision, key index, then the documents. ARGV: channel, then (name, expected, doc or '')
# per document. Answers the new store revision, or 0 when an expected revision did not hold.
_WRITE = """
local n = #KEYS - 2
for i = 1, n do
  local rev = tonumber(redis.call('HGET', KEYS[i + 2], 'rev') or '0')
  if rev ~= tonumber(ARGV[(i - 1) * 3 + 3]) then return 0 end
end
for i = 1, n do
  local name, expected, doc = ARGV[(i - 1) * 3 + 2], tonumber(ARGV[(i - 1) * 3 + 3]), ARGV[(i - 1) * 3 + 4]
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

    def write(self, changes: dict[str, tuple[int, dict[str, Any] | None]]) -> bool:
        """All or nothing: every key must still be at its expected revision."""
        keys = [self._revision_key, self._index, *(self._doc_key(k) for k in changes)]
        args: list[Any] = [self.channel]
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
        found = self._call(self.redis.zrangebylex, self._index, f"[{prefix}", f"[{prefix}\xff")
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
        """Store the component under its hash (once: an existing blob is left alone) and keep a
        local copy, so this node need not fetch what it just uploaded."""
        target = self.blob_path_local(sha256)
        data = Path(path).read_bytes()
        self._call(lambda: self.redis.set(self._blob_key(sha256), data, nx=True))
        self._wait()
        if not target.exists():
            self._write_local(target, data)

    def blob_path(self, sha256: str) -> Path:
        """The component as a local file, fetched from Redis (and checked) on first use."""
        target = self.blob_path_local(sha256)
        if target.exists():
            return target
        data = self._call(self.redis.get, self._blob_key(sha256))
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
        if not _SHA256.fullmatch(sha256):
            raise ValueError(f"{sha256!r} is not a sha256 hex digest")
        return self.blob_dir / f"{sha256}.wasm"

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
