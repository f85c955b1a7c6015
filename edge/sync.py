"""Node-to-node sync through Redis: what the nodes of a fleet share (`control_plane = "redis://..."`).

    Redis key or channel              what                                      module
    <prefix>q:*                       the Event queue (a stream, consumer group) edge/sync_queue.py
    <prefix>slots:<function>          reserved concurrency: slot id -> lease     FleetSlots, here
    <prefix>notice:<topic> (channel)  change notices: cache purges, registry     Notices, here

Everything here is about Redis and nodes; nothing knows the gateway. The gateway hands in
callables (what to do when a purge notice arrives) and receives objects that satisfy its seams
structurally (the queue's event store, the registry's document store).

The control-plane URL is a redis-py URL plus edgefn's own query parameters, which are taken off
before redis-py sees it:

    redis://HOST:PORT/DB?lease_s=15&wait_replicas=1&prefix=edgefn:

- `lease_s`: a node that stops refreshing its claims for this long is taken for dead: its
  running events and its concurrency slots are taken back by the others (default 15 s).
- `wait_replicas`: an Event is answered 202 only after this many replicas acknowledged it
  (Redis `WAIT`); 0 (the default) trusts the primary alone (see docs/fleet.md for appendfsync).
- `prefix`: the namespace of every key and channel (default `edgefn:`), so fleets can share a
  Redis server.

Lua scripts read the time with Redis `TIME`, so leases do not depend on the nodes' clocks agreeing.
Keys are built inside scripts, so this targets one Redis primary (with replicas or Sentinel), not
Redis Cluster.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import redis
import redis.asyncio as aredis

from edge.errors import ControlPlaneError

log = logging.getLogger("edgefn.fleet")

DEFAULT_LEASE_S = 15.0
DEFAULT_PREFIX = "edgefn:"
CONNECT_TIMEOUT_S = 5.0
COMMAND_TIMEOUT_S = 10.0
RECONNECT_MAX_S = 5.0
OWN_PARAMETERS = frozenset({"lease_s", "wait_replicas", "prefix"})

Callback = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class ControlPlane:
    """A parsed `control_plane` URL: where Redis is and the fleet's own settings."""

    url: str
    lease_s: float = DEFAULT_LEASE_S
    wait_replicas: int = 0
    prefix: str = DEFAULT_PREFIX

    @classmethod
    def parse(cls, url: str) -> ControlPlane:
        parts = urlsplit(url)
        if parts.scheme not in ("redis", "rediss", "unix") or not (parts.hostname or parts.path):
            raise ValueError(f"control_plane {url!r} is not a redis:// URL")
        query = parse_qsl(parts.query, keep_blank_values=True)
        ours = {key: value for key, value in query if key in OWN_PARAMETERS}
        theirs = [(key, value) for key, value in query if key not in OWN_PARAMETERS]
        try:
            lease_s = float(ours.get("lease_s", DEFAULT_LEASE_S))
            wait_replicas = int(ours.get("wait_replicas", 0))
        except ValueError as exc:
            raise ValueError(
                f"control_plane {url!r}: lease_s must be a number, wait_replicas an integer"
            ) from exc
        if not 0.5 <= lease_s <= 3600:
            raise ValueError(f"control_plane {url!r}: lease_s must be between 0.5 and 3600 seconds")
        if wait_replicas < 0:
            raise ValueError(f"control_plane {url!r}: wait_replicas must be 0 or more")
        prefix = ours.get("prefix", DEFAULT_PREFIX)
        if not prefix:
            raise ValueError(f"control_plane {url!r}: prefix must not be empty")
        clean = urlunsplit(parts._replace(query=urlencode(theirs)))
        return cls(url=clean, lease_s=lease_s, wait_replicas=wait_replicas, prefix=prefix)

    @property
    def shown(self) -> str:
        """The URL without a password, for logs and errors."""
        parts = urlsplit(self.url)
        if parts.password is None:
            return self.url
        netloc = f"{parts.username or ''}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
        return urlunsplit(parts._replace(netloc=netloc))

    def client(self) -> redis.Redis:
        """A blocking client (thread-safe connection pool) for stores called from worker threads."""
        return redis.Redis.from_url(
            self.url, socket_connect_timeout=CONNECT_TIMEOUT_S, socket_timeout=COMMAND_TIMEOUT_S
        )

    def async_client(self, *, timeout: bool = True) -> aredis.Redis:
        """An asyncio client; `timeout=False` for a pub/sub connection that waits indefinitely."""
        return aredis.Redis.from_url(
            self.url,
            socket_connect_timeout=CONNECT_TIMEOUT_S,
            socket_timeout=COMMAND_TIMEOUT_S if timeout else None,
        )


async def stop_task(task: asyncio.Task[None] | None) -> None:
    """Cancel a background loop (renewals, a subscription) and wait until it has ended."""
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def node_id(node: str) -> str:
    """A name for this process in the fleet: node name, host, pid and a token (pids are reused)."""
    return f"{node}/{socket.gethostname()}/{os.getpid()}/{secrets.token_hex(4)}"


class Notices:
    """Change notices over pub/sub: each topic is a channel; a node ignores its own notices.

    Pub/sub delivers to whoever is subscribed at that moment and keeps nothing, so after a lost
    connection a node cannot know what it missed: the `on_resync` callbacks run after every
    re-subscription, and each subscriber decides what "I may have missed something" means (the
    cache empties itself; the registry re-reads its revision).
    """

    def __init__(self, plane: ControlPlane, sender: str) -> None:
        self.plane = plane
        self.sender = sender
        self._client = plane.async_client(timeout=False)
        self._publisher = plane.async_client()
        self._callbacks: dict[str, list[Callback]] = {}
        self._resync: list[Callable[[], None]] = []
        self._task: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()

    def channel(self, topic: str) -> str:
        return f"{self.plane.prefix}notice:{topic}"

    def subscribe(self, topic: str, callback: Callback) -> None:
        """Call `callback(payload)` for every notice on `topic` from another process.

        Subscribe before `start()`: the channel list is fixed when the connection subscribes."""
        self._callbacks.setdefault(self.channel(topic), []).append(callback)

    def on_resync(self, callback: Callable[[], None]) -> None:
        self._resync.append(callback)

    async def publish(self, topic: str, payload: dict[str, Any]) -> int:
        """Send a notice to every other subscribed process; answers how many processes heard it
        (this one included)."""
        message = json.dumps({"sender": self.sender, **payload})
        try:
            return int(await self._publisher.publish(self.channel(topic), message))
        except redis.RedisError as exc:
            raise ControlPlaneError(f"{self.plane.shown}: cannot publish a {topic} notice: {exc}") from exc

    async def start(self, timeout: float = CONNECT_TIMEOUT_S) -> None:
        """Subscribe; returns once subscribed, so no notice sent after start-up is missed."""
        if not self._callbacks:
            return
        self._task = asyncio.create_task(self._listen(), name="edgefn-fleet-notices")
        try:
            await asyncio.wait_for(self._subscribed.wait(), timeout)
        except TimeoutError as exc:
            await self.aclose()
            raise ControlPlaneError(f"{self.plane.shown}: could not subscribe in {timeout:g} s") from exc

    async def aclose(self) -> None:
        await stop_task(self._task)
        self._task = None
        await self._client.aclose()
        await self._publisher.aclose()

    async def _listen(self) -> None:
        delay = 0.1
        first = True
        while True:
            pubsub = self._client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(*self._callbacks)
                if not first:
                    log.warning(
                        json.dumps({"event": "notices-resubscribed", "control_plane": self.plane.shown})
                    )
                    for resync in self._resync:
                        resync()
                first = False
                delay = 0.1
                self._subscribed.set()
                while True:
                    message = await pubsub.get_message(timeout=30.0)
                    if message is not None:
                        self._dispatch(message)
            except asyncio.CancelledError:
                raise
            except (redis.RedisError, OSError) as exc:
                log.warning(
                    json.dumps(
                        {"event": "notices-lost", "control_plane": self.plane.shown, "error": str(exc)}
                    )
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, RECONNECT_MAX_S)
            finally:
                with contextlib.suppress(redis.RedisError, OSError):
                    await pubsub.aclose()

    def _dispatch(self, message: dict[str, Any]) -> None:
        if message.get("type") != "message":
            return
        channel = message["channel"]
        channel = channel.decode() if isinstance(channel, bytes) else str(channel)
        try:
            payload = json.loads(message["data"])
        except ValueError:
            log.warning("fleet notice on %s is not JSON; ignored", channel)
            return
        if not isinstance(payload, dict) or payload.get("sender") == self.sender:
            return
        for callback in self._callbacks.get(channel, ()):
            try:
                callback(payload)
            except Exception:
                log.exception("fleet notice on %s: the handler failed", channel)


# Reserved concurrency ----------------------------------------------------------------------------

# KEYS[1] the function's slot set; ARGV: limit, slot id, lease (ms). Expired slots (their node
# stopped refreshing them) are dropped first, so a dead node's slots come back after one lease.
_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then
  return 0
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[2])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[3]) * 2)
return 1
"""

# KEYS: slot sets; ARGV[1] lease (ms), then one slot id per key. Only slots still held are renewed.
_REFRESH = """
local t = redis.call('TIME')
local until_ = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + tonumber(ARGV[1])
for i, key in ipairs(KEYS) do
  redis.call('ZADD', key, 'XX', until_, ARGV[i + 1])
  redis.call('PEXPIRE', key, tonumber(ARGV[1]) * 2)
end
return #KEYS
"""


class FleetSlots:
    """Reserved concurrency counted across every node: a sorted set per function of slot id ->
    lease expiry. A running invocation's slot is renewed every third of a lease; a node that dies
    stops renewing and its slots expire, so the capacity comes back by itself."""

    def __init__(self, plane: ControlPlane, owner: str) -> None:
        self.plane = plane
        self.owner = owner
        self._client = plane.async_client()
        self._acquire = self._client.register_script(_ACQUIRE)
        self._refresh = self._client.register_script(_REFRESH)
        self._held: dict[str, str] = {}  # slot id -> key
        self._task: asyncio.Task[None] | None = None

    def key(self, function: str) -> str:
        return f"{self.plane.prefix}slots:{function}"

    @property
    def lease_ms(self) -> int:
        return int(self.plane.lease_s * 1000)

    async def acquire(self, function: str, limit: int) -> str | None:
        """A slot id, or None when `limit` slots are taken fleet-wide."""
        slot = f"{self.owner}/{secrets.token_hex(6)}"
        key = self.key(function)
        try:
            ok = await self._acquire(keys=[key], args=[limit, slot, self.lease_ms])
        except redis.RedisError as exc:
            raise ControlPlaneError(
                f"{self.plane.shown}: cannot count function {function!r}'s concurrency: {exc}"
            ) from exc
        if not ok:
            return None
        self._held[slot] = key
        return slot

    async def release(self, function: str, slot: str) -> None:
        key = self._held.pop(slot, self.key(function))
        try:
            await self._client.zrem(key, slot)
        except redis.RedisError as exc:
            # The slot's lease runs out by itself: capacity is late, never lost.
            log.warning(
                "releasing a concurrency slot of %s failed (%s); its lease will expire", function, exc
            )

    async def start(self) -> None:
        self._task = asyncio.create_task(self._renew(), name="edgefn-fleet-slots")

    async def aclose(self) -> None:
        await stop_task(self._task)
        if self._held:
            with contextlib.suppress(redis.RedisError, OSError):
                pipe = self._client.pipeline(transaction=False)
                for slot, key in self._held.items():
                    pipe.zrem(key, slot)
                await pipe.execute()
            self._held.clear()
        await self._client.aclose()

    async def _renew(self) -> None:
        while True:
            await asyncio.sleep(self.plane.lease_s / 3)
            held = list(self._held.items())
            if not held:
                continue
            try:
                await self._refresh(keys=[k for _, k in held], args=[self.lease_ms, *(s for s, _ in held)])
            except redis.RedisError as exc:
                log.warning("renewing %d concurrency slots failed: %s", len(held), exc)


class Fleet:
    """One process's membership of a fleet: notices, shared concurrency, and the Redis clients
    the stores (queue, registry) are built on."""

    def __init__(self, plane: ControlPlane, node: str) -> None:
        self.plane = plane
        self.id = node_id(node)
        self.notices = Notices(plane, self.id)
        self.slots = FleetSlots(plane, self.id)

    @classmethod
    def from_url(cls, url: str, node: str) -> Fleet:
        return cls(ControlPlane.parse(url), node)

    async def start(self) -> None:
        """Check that Redis answers (start-up fails with the reason if not), then subscribe."""
        client = self.plane.async_client()
        try:
            await client.ping()
        except (redis.RedisError, OSError) as exc:
            raise ControlPlaneError(
                f"control_plane {self.plane.shown}: Redis does not answer: {exc}"
            ) from exc
        finally:
            await client.aclose()
        await self.notices.start()
        await self.slots.start()
        log.info(json.dumps({"event": "fleet-joined", "control_plane": self.plane.shown, "id": self.id}))

    async def aclose(self) -> None:
        await self.slots.aclose()
        await self.notices.aclose()


__all__ = ["ControlPlane", "ControlPlaneError", "Fleet", "FleetSlots", "Notices", "node_id", "stop_task"]
