"""The Event queue of a fleet in Redis: the same store methods as the SQLite `EventStore`
(gateway/functions/queue.py), so one worker and one set of rules serve both.

    <prefix>q:stream                stream of {id}: events due now; consumer group `workers`,
                                    one consumer per gateway process
    <prefix>q:delayed               sorted set id -> due time: retries, throttles, redrives
    <prefix>q:ev:<id>               hash: the event (request, body, state, attempts, times, owner,
                                    msg = the stream entry it is running under)
    <prefix>q:fn:<function>:<state> sorted set id -> created, per state (queued, running,
                                    succeeded, dlq): listings, depth, redrive
    <prefix>q:functions             set of function names with events
    <prefix>q:succeeded             sorted set id -> finished time (pruning)
    <prefix>q:done:<id>             completion marker, SET NX: an invocation succeeds once
    <prefix>q:schedule:<json>       last fire time of a (function, expression) schedule

Life of an event: `add` writes the hash and XADDs the id (a MULTI/EXEC transaction; with
`wait_replicas` also a `WAIT`) before the caller answers 202. A worker's `claim` moves due
delayed ids into the stream, takes over entries left pending by a process that stopped renewing
them for a lease (XAUTOCLAIM), reads new ones (XREADGROUP), and marks each event running in a Lua
script that refuses stale entries. `finish` and `retry` change the state and XACK+XDEL the entry
in one script. A running worker renews its entries (XCLAIM to itself, which resets their idle
time) every third of a lease, so only a dead or cut-off process's entries are taken over.

Delivery is at least once: a process cut off from Redis for longer than a lease may still be
running an event that another process has taken over. `done:<id>` (SET NX) makes the second
completion a no-op, a claim of an event already completed is refused, and a retry or DLQ move from
a process that is no longer the owner is ignored.

Store calls are blocking (redis-py's thread-safe client): the queue calls them on its database
thread, as it does SQLite's.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any, Generic, Protocol, TypeVar, cast

import redis

from edge.errors import ControlPlaneError
from edge.sync import ControlPlane

log = logging.getLogger("edgefn.fleet.queue")

GROUP = "workers"
STATES = ("queued", "running", "succeeded", "dlq")
KEEP_DONE_S = 7 * 86400  # completion markers outlive any retry schedule
MOVE_BATCH = 500
PRUNE_BATCH = 1000
SCHEDULE_RETRIES = 20
CONSUMER_IDLE_MS = 3600 * 1000  # consumers with nothing pending, idle this long, are dropped


class EventLike(Protocol):
    """The fields of gateway.functions.queue.Event this store reads and builds."""

    id: str
    function: str
    reference: str
    state: str
    attempts: int
    created: float
    due: float
    request: dict[str, Any]
    body: bytes
    last_status: int | None
    last_error: str | None
    updated: float


E = TypeVar("E", bound=EventLike)

# Shared by the scripts: move event `id` (hash `ev`) between per-function state sets.
_LUA_MOVE = """
local P = ARGV[1]
local function move(ev, id, to)
  local f = redis.call('HGET', ev, 'function')
  local from = redis.call('HGET', ev, 'state')
  redis.call('ZREM', P .. 'q:fn:' .. f .. ':' .. from, id)
  redis.call('ZADD', P .. 'q:fn:' .. f .. ':' .. to, redis.call('HGET', ev, 'created'), id)
  redis.call('HSET', ev, 'state', to)
end
local function ack(msg)
  if msg and msg ~= '' then
    redis.call('XACK', P .. 'q:stream', 'workers', msg)
    redis.call('XDEL', P .. 'q:stream', msg)
  end
end
"""

# ARGV: prefix, id, msg, owner, lease_until, now. 1: claimed; 0: stale or completed (ack it).
_CLAIM = (
    _LUA_MOVE
    + """
local id, msg = ARGV[2], ARGV[3]
local ev = P .. 'q:ev:' .. id
local state = redis.call('HGET', ev, 'state')
if not state or redis.call('EXISTS', P .. 'q:done:' .. id) == 1 then return 0 end
if state == 'queued' then
  if redis.call('ZSCORE', P .. 'q:delayed', id) then return 0 end
  redis.call('HINCRBY', ev, 'attempts', 1)
  move(ev, id, 'running')
elseif state == 'running' and redis.call('HGET', ev, 'msg') == msg then
  -- taken over from a process that stopped renewing it: an interrupted run is no attempt
else
  return 0
end
redis.call('HSET', ev, 'owner', ARGV[4], 'lease_until', ARGV[5], 'updated', ARGV[6], 'msg', msg)
return 1
"""
)

# ARGV: prefix, id, state (succeeded|dlq), status, error, now, owner, keep_done_s.
# 1: done; 0: not ours (any more) or gone; -1: already completed elsewhere.
_FINISH = (
    _LUA_MOVE
    + """
local id, to, owner = ARGV[2], ARGV[3], ARGV[7]
local ev = P .. 'q:ev:' .. id
local state = redis.call('HGET', ev, 'state')
if not state then return 0 end
local msg = redis.call('HGET', ev, 'msg')
if to == 'succeeded' then
  if not redis.call('SET', P .. 'q:done:' .. id, owner, 'NX', 'EX', ARGV[8]) then
    if redis.call('HGET', ev, 'owner') == owner then ack(msg) end
    return -1
  end
  redis.call('ZADD', P .. 'q:succeeded', ARGV[6], id)
elseif state ~= 'running' or redis.call('HGET', ev, 'owner') ~= owner then
  return 0
end
move(ev, id, to)
redis.call('HSET', ev, 'last_status', ARGV[4], 'last_error', ARGV[5], 'owner', '', 'lease_until', '',
  'updated', ARGV[6], 'msg', '')
ack(msg)
return 1
"""
)

# ARGV: prefix, id, due, status, error, now, owner, give_back (1: the attempt does not count),
# keep_last (1: leave last_status/last_error as they are). 1: queued again; 0: not ours.
_RETRY = (
    _LUA_MOVE
    + """
local id, owner = ARGV[2], ARGV[7]
local ev = P .. 'q:ev:' .. id
if redis.call('HGET', ev, 'state') ~= 'running' or redis.call('HGET', ev, 'owner') ~= owner then
  return 0
end
local msg = redis.call('HGET', ev, 'msg')
move(ev, id, 'queued')
if ARGV[8] == '1' and tonumber(redis.call('HGET', ev, 'attempts')) > 0 then
  redis.call('HINCRBY', ev, 'attempts', -1)
end
if ARGV[9] ~= '1' then
  redis.call('HSET', ev, 'last_status', ARGV[4], 'last_error', ARGV[5])
end
redis.call('HSET', ev, 'due', ARGV[3], 'owner', '', 'lease_until', '', 'updated', ARGV[6], 'msg', '')
redis.call('ZADD', P .. 'q:delayed', ARGV[3], id)
ack(msg)
return 1
"""
)

# ARGV: prefix, now, limit. Due delayed ids become stream entries.
_MOVE_DUE = """
local P = ARGV[1]
local ids = redis.call('ZRANGEBYSCORE', P .. 'q:delayed', '-inf', ARGV[2], 'LIMIT', 0, tonumber(ARGV[3]))
for _, id in ipairs(ids) do
  redis.call('ZREM', P .. 'q:delayed', id)
  redis.call('XADD', P .. 'q:stream', '*', 'id', id)
end
return #ids
"""

# ARGV: prefix, function, now. Every DLQ event is queued again as new (fresh age, attempts 0).
_REDRIVE = (
    _LUA_MOVE
    + """
local ids = redis.call('ZRANGE', P .. 'q:fn:' .. ARGV[2] .. ':dlq', 0, -1)
for _, id in ipairs(ids) do
  local ev = P .. 'q:ev:' .. id
  redis.call('HSET', ev, 'created', ARGV[3], 'due', ARGV[3], 'updated', ARGV[3], 'attempts', 0)
  move(ev, id, 'queued')
  redis.call('ZADD', P .. 'q:delayed', ARGV[3], id)
end
return #ids
"""
)

# ARGV: prefix, before, limit. Succeeded events finished before `before` are deleted.
_PRUNE = """
local P = ARGV[1]
local ids = redis.call('ZRANGEBYSCORE', P .. 'q:succeeded', '-inf', ARGV[2], 'LIMIT', 0, tonumber(ARGV[3]))
for _, id in ipairs(ids) do
  local ev = P .. 'q:ev:' .. id
  local f = redis.call('HGET', ev, 'function')
  if f then redis.call('ZREM', P .. 'q:fn:' .. f .. ':succeeded', id) end
  redis.call('DEL', ev)
  redis.call('ZREM', P .. 'q:succeeded', id)
end
return #ids
"""


# KEYS: the stream. ARGV: group, consumer. Deletes the consumer only with nothing pending: its
# pending entries would be lost with it (anything still pending is taken over after a lease).
_LEAVE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local pending = redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2])
if #pending > 0 then return 0 end
return redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
"""


def _text(value: bytes | None) -> str | None:
    return value.decode() if value else None


class RedisEventStore(Generic[E]):
    """An event store shared by every node of a fleet (see the module docstring).

    `make_event` builds the gateway's `Event` from its fields (edge cannot import gateway)."""

    def __init__(self, plane: ControlPlane, owner: str, make_event: Callable[..., E]) -> None:
        self.plane = plane
        self.owner = owner  # also the consumer name in the group
        self.make_event = make_event
        self.lease_s = plane.lease_s
        self.redis = plane.client()
        p = self.p = plane.prefix
        self.stream, self.delayed, self.functions = f"{p}q:stream", f"{p}q:delayed", f"{p}q:functions"
        self._claim = self.redis.register_script(_CLAIM)
        self._finish = self.redis.register_script(_FINISH)
        self._retry = self.redis.register_script(_RETRY)
        self._move_due = self.redis.register_script(_MOVE_DUE)
        self._redrive = self.redis.register_script(_REDRIVE)
        self._prune = self.redis.register_script(_PRUNE)
        self._leave = self.redis.register_script(_LEAVE)
        self._mine: dict[str, str] = {}  # event id -> stream entry, for what this process runs
        self._renewed = 0.0
        self._call(self._create_group)

    def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        try:
            try:
                return fn(*args)
            except redis.ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    raise
                # Redis lost its data (restarted without persistence, or flushed): the stream
                # and group are made again; events it held are gone (see docs/fleet.md).
                log.error(json.dumps({"event": "queue-group-recreated", "control_plane": self.plane.shown}))
                self._create_group()
                return fn(*args)
        except redis.RedisError as exc:
            raise ControlPlaneError(f"{self.plane.shown}: event queue: {exc}") from exc

    def _create_group(self) -> None:
        try:
            self.redis.xgroup_create(self.stream, GROUP, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def ev(self, event_id: str) -> str:
        return f"{self.p}q:ev:{event_id}"

    def state_key(self, function: str, state: str) -> str:
        return f"{self.p}q:fn:{function}:{state}"

    def close(self) -> None:
        """At a graceful stop, after `requeue_own`: this process's consumer leaves the group, so
        the group lists the processes that are running (with `serve --workers N`, N per node)
        rather than every process that ever ran, until the hour-long idle rule drops it."""
        try:
            self._leave(keys=[self.stream], args=[GROUP, self.owner])
        except redis.RedisError as exc:  # left for `recover` on another process after an hour idle
            log.warning("leaving the queue's consumer group failed: %s", exc)
        self.redis.close()

    # writing ---------------------------------------------------------------------------------

    def _queue_add(self, pipe: Any, event: EventLike) -> None:
        """Queue the commands that add `event` (inside the caller's MULTI)."""
        pipe.hset(
            self.ev(event.id),
            mapping={
                "id": event.id,
                "function": event.function,
                "reference": event.reference,
                "state": "queued",
                "attempts": 0,
                "created": repr(event.created),
                "due": repr(event.due),
                "request": json.dumps(event.request),
                "body": event.body,
                "last_status": "",
                "last_error": "",
                "updated": repr(event.created),
                "owner": "",
                "lease_until": "",
                "msg": "",
            },
        )
        pipe.zadd(self.state_key(event.function, "queued"), {event.id: event.created})
        pipe.sadd(self.functions, event.function)
        if event.due <= event.created:
            pipe.xadd(self.stream, {"id": event.id})
        else:
            pipe.zadd(self.delayed, {event.id: event.due})

    def add(self, event: EventLike) -> None:
        """Store and enqueue; when this returns Redis has the event (and, with `wait_replicas`,
        that many replicas acknowledged it)."""

        def run() -> None:
            pipe = self.redis.pipeline(transaction=True)
            self._queue_add(pipe, event)
            pipe.execute()
            self._wait()

        self._call(run)

    def _wait(self) -> None:
        need = self.plane.wait_replicas
        if need <= 0:
            return
        got = int(self.redis.wait(need, int(self.lease_s * 1000)))
        if got < need:
            raise ControlPlaneError(
                f"{self.plane.shown}: only {got} of {need} replicas acknowledged the event in time"
            )

    def fire_schedule(
        self,
        function: str,
        expression: str,
        decide: Callable[[float | None], tuple[float | None, E | None]],
    ) -> tuple[float | None, E | None]:
        """Compare-and-set of a schedule's last fire time together with the event it fires
        (WATCH/MULTI): of several nodes looking at one tick, one fires it.

        `decide(last_fire or None)` answers (new last fire time or None for no change, event)."""
        key = f"{self.p}q:schedule:{json.dumps([function, expression])}"

        def run() -> tuple[float | None, E | None]:
            for _ in range(SCHEDULE_RETRIES):
                with self.redis.pipeline(transaction=True) as pipe:
                    try:
                        pipe.watch(key)
                        raw = pipe.get(key)
                        last = float(raw) if raw is not None else None
                        new_last, event = decide(last)
                        if new_last is None:
                            pipe.unwatch()
                            return last, None
                        pipe.multi()
                        pipe.set(key, repr(new_last))
                        if event is not None:
                            self._queue_add(pipe, event)
                        pipe.execute()
                    except redis.WatchError:
                        continue
                if event is not None:
                    self._wait()
                return new_last, event
            raise ControlPlaneError(f"schedule {function} {expression}: too much contention")

        result: tuple[float | None, E | None] = self._call(run)
        return result

    def claim(self, now: float, limit: int) -> list[E]:
        """Due events for this process to run: delayed ones that came due, ones a dead process
        left running, new ones; each marked running with this process as owner."""

        def run() -> list[E]:
            self._move_due(args=[self.p, now, MOVE_BATCH])
            lease_ms = int(self.lease_s * 1000)
            entries: list[tuple[bytes, dict[bytes, bytes] | None]] = []
            reply = self.redis.xautoclaim(self.stream, GROUP, self.owner, lease_ms, "0-0", count=limit)
            taken = list(reply[1])
            if taken:
                log.warning(json.dumps({"event": "taken-over", "count": len(taken), "by": self.owner}))
            entries += taken
            if len(entries) < limit:
                read = cast(
                    "list[tuple[bytes, list[tuple[bytes, dict[bytes, bytes] | None]]]] | None",
                    self.redis.xreadgroup(GROUP, self.owner, {self.stream: ">"}, count=limit - len(entries)),
                )
                for _, messages in read or ():
                    entries += messages
            claimed: list[E] = []
            stale: list[bytes] = []
            for msg, fields in entries:
                event_id = (fields or {}).get(b"id")
                if event_id is not None and event_id.decode() in self._mine:
                    continue  # running here already (a renewal came late): not a second run
                ok = event_id is not None and self._claim(
                    args=[self.p, event_id, msg, self.owner, now + self.lease_s, now]
                )
                if not ok:
                    stale.append(msg)
                    continue
                event = self._load(event_id.decode())  # type: ignore[union-attr]
                if event is not None:
                    self._mine[event.id] = msg.decode()
                    claimed.append(event)
            if stale:
                pipe = self.redis.pipeline(transaction=False)
                pipe.xack(self.stream, GROUP, *stale)
                pipe.xdel(self.stream, *stale)
                pipe.execute()
            return claimed

        claimed: list[E] = self._call(run)
        return claimed

    def keep_alive(self, now: float) -> None:
        """Renew this process's running entries (every third of a lease) so no one takes them."""
        if not self._mine or now - self._renewed < self.lease_s / 3:
            return
        self._renewed = now

        def run() -> None:
            self.redis.xclaim(self.stream, GROUP, self.owner, 0, list(self._mine.values()), justid=True)
            pipe = self.redis.pipeline(transaction=False)
            for event_id in self._mine:
                pipe.hset(self.ev(event_id), "lease_until", repr(now + self.lease_s))
            pipe.execute()

        self._call(run)

    def recover(self, now: float) -> int:
        """Housekeeping: consumers of processes long gone, with nothing pending, leave the group.
        (Their pending events are taken over by `claim` after one lease.)"""

        def run() -> int:
            dropped = 0
            for consumer in self.redis.xinfo_consumers(self.stream, GROUP):
                name = consumer["name"]
                name = name.decode() if isinstance(name, bytes) else name
                if name != self.owner and consumer["pending"] == 0 and consumer["idle"] > CONSUMER_IDLE_MS:
                    self.redis.xgroup_delconsumer(self.stream, GROUP, name)
                    dropped += 1
            return dropped

        self._call(run)
        return 0

    def requeue_own(self, now: float) -> int:
        """At shutdown: what this process was running is due again now, the attempt given back."""
        count = 0
        for event_id in list(self._mine):
            del self._mine[event_id]
            args = [self.p, event_id, now, "", "", now, self.owner, 1, 1]
            count += int(self._call(lambda args=args: self._retry(args=args)))
        return count

    def finish(self, event_id: str, state: str, *, status: int | None, error: str | None, now: float) -> None:
        self._mine.pop(event_id, None)
        args = [self.p, event_id, state, "" if status is None else status, error or "", now, self.owner]
        result = self._call(lambda: self._finish(args=[*args, KEEP_DONE_S]))
        if result == -1:
            log.warning(json.dumps({"event": "duplicate-completion", "invocation_id": event_id}))
        elif result == 0:
            log.warning(json.dumps({"event": "finish-ignored", "invocation_id": event_id, "state": state}))

    def retry(
        self,
        event_id: str,
        due: float,
        *,
        status: int | None,
        error: str | None,
        now: float,
        spend_attempt: bool = True,
    ) -> None:
        self._mine.pop(event_id, None)
        give_back = 0 if spend_attempt else 1
        args: list[Any] = [
            self.p,
            event_id,
            due,
            "" if status is None else status,
            error or "",
            now,
            self.owner,
            give_back,
            0,
        ]
        if not self._call(lambda: self._retry(args=args)):
            log.warning(json.dumps({"event": "retry-ignored", "invocation_id": event_id}))

    def redrive(self, function: str, now: float) -> int:
        count: int = self._call(lambda: self._redrive(args=[self.p, function, now]))
        return count

    def prune(self, before: float) -> int:
        count: int = self._call(lambda: self._prune(args=[self.p, before, PRUNE_BATCH]))
        return count

    # reading ---------------------------------------------------------------------------------

    def _load(self, event_id: str) -> E | None:
        fields = cast("dict[bytes, bytes]", self.redis.hgetall(self.ev(event_id)))
        return self._event(fields) if fields else None

    def _event(self, f: dict[bytes, bytes]) -> E:
        status = f.get(b"last_status")
        return self.make_event(
            id=f[b"id"].decode(),
            function=f[b"function"].decode(),
            reference=f[b"reference"].decode(),
            state=f[b"state"].decode(),
            attempts=int(f[b"attempts"]),
            created=float(f[b"created"]),
            due=float(f[b"due"]),
            request=json.loads(f[b"request"]),
            body=f.get(b"body", b""),
            last_status=int(status) if status else None,
            last_error=_text(f.get(b"last_error")),
            updated=float(f[b"updated"]),
        )

    def get(self, event_id: str) -> E | None:
        event: E | None = self._call(self._load, event_id)
        return event

    def list(self, function: str, states: tuple[str, ...], limit: int = 1000) -> list[E]:
        def run() -> list[E]:
            pipe = self.redis.pipeline(transaction=False)
            for state in states:
                pipe.zrange(self.state_key(function, state), 0, limit - 1, withscores=True)
            ranked = sorted(
                ((score, member.decode()) for found in pipe.execute() for member, score in found)
            )[:limit]
            pipe = self.redis.pipeline(transaction=False)
            for _, event_id in ranked:
                pipe.hgetall(self.ev(event_id))
            return [self._event(fields) for fields in pipe.execute() if fields]

        events: list[E] = self._call(run)
        return events

    def next_due(self) -> float | None:
        def run() -> float | None:
            first = self.redis.zrange(self.delayed, 0, 0, withscores=True)
            return float(first[0][1]) if first else None

        due: float | None = self._call(run)
        return due

    def depth(self) -> dict[str, tuple[int, float, int]]:
        """Per function: (events waiting or running, oldest such event's created time, DLQ size)."""

        def run() -> dict[str, tuple[int, float, int]]:
            names = sorted(n.decode() for n in cast("set[bytes]", self.redis.smembers(self.functions)))
            pipe = self.redis.pipeline(transaction=False)
            for name in names:
                for state in ("queued", "running"):
                    pipe.zcard(self.state_key(name, state))
                    pipe.zrange(self.state_key(name, state), 0, 0, withscores=True)
                pipe.zcard(self.state_key(name, "dlq"))
            replies = iter(pipe.execute())
            out: dict[str, tuple[int, float, int]] = {}
            for name in names:
                pending, oldest = 0, []
                for _ in range(2):
                    pending += next(replies)
                    oldest += [score for _, score in next(replies)]
                out[name] = (pending, min(oldest) if oldest else 0.0, next(replies))
            return out

        depth: dict[str, tuple[int, float, int]] = self._call(run)
        return depth

    def stats(self) -> dict[str, tuple[int, float, int]]:
        return self.depth()


__all__ = ["GROUP", "STATES", "RedisEventStore"]
