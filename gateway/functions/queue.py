"""Asynchronous (`Event`) invocations: a durable queue in SQLite, a worker, retries and a DLQ.

    client --Event--> intercept() --persist (fsync'd commit)--> 202 + invocation id
                                                   |
    worker (asyncio task) <--claim due events------+
        -> invoke(reference, request)   ok: succeeded
                                        failed (>= 500, trap, timeout): retried after
                                        retry_delays_s, max_retries times, then the DLQ
                                        throttled (429): due again shortly, no attempt spent
        events older than max_event_age_s go to the DLQ when they come up

The 202 is sent only after the event is committed, so an answered Event is never lost. Delivery
is at least once: an event that was running when its process died (kill -9) is due again when the
process is found dead (on start, and by any peer process that shares the database), keeping its
invocation id so a function can recognise a duplicate (`x-edgefn-invocation-id`). An interrupted
run does not count as a failed attempt.

Several worker processes (`serve --workers N`) share one database; claiming an event is one
`UPDATE ... WHERE state = 'queued'` in a write transaction, so each event runs in one process.

Where events are kept is a seam (`Store`): `EventStore` here (SQLite, one machine), or
`edge.sync_queue.RedisEventStore` for a fleet (`control_plane = "redis://..."`), where an event
accepted by one node is run by any node. The worker and its rules (retries, throttles, maximum
age, DLQ) are the same for both.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import secrets
import socket
import sqlite3
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

from edge.errors import ControlPlaneError
from gateway.context import EdgeRequest, EdgeResponse, single_chunk
from gateway.errors import BadRequest, GatewayError, Throttled
from gateway.functions.sqlite import connect
from gateway.pipeline import read_bounded
from routes.config import AsyncInvoke

log = logging.getLogger("edgefn.invocations")

INVOCATION_TYPE = b"x-edgefn-invocation-type"
INVOCATION_ID = b"x-edgefn-invocation-id"
ATTEMPT = b"x-edgefn-attempt"
# Lambda's limit for an asynchronous payload.
MAX_EVENT_BYTES = 256 * 1024
DEFAULT_CONCURRENCY = 8
POLL_S = 1.0  # how often the worker looks for events enqueued by other processes
MAX_PAUSE_S = 30.0  # longest wait between passes while the store is unreachable
LEASE_S = 900.0  # a running event whose owner cannot be checked is due again after this
THROTTLE_DELAY_S = 1.0
KEEP_SUCCEEDED_S = 3600.0
MAX_ERROR_CHARS = 1000

Invoke = Callable[[str, EdgeRequest], Awaitable[EdgeResponse]]
Validate = Callable[[str], Any]
Settings = Callable[[str], AsyncInvoke]
T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id TEXT PRIMARY KEY,
    function TEXT NOT NULL,
    reference TEXT NOT NULL,
    state TEXT NOT NULL,            -- queued | running | succeeded | dlq
    attempts INTEGER NOT NULL DEFAULT 0,
    created REAL NOT NULL,          -- accepted (or redriven) at; the event's age counts from here
    due REAL NOT NULL,
    owner TEXT,                     -- host/pid/token of the process running it
    lease_until REAL,
    request TEXT NOT NULL,          -- JSON: method, scheme, host, path, query, headers, client
    body BLOB NOT NULL,
    last_status INTEGER,
    last_error TEXT,
    updated REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS events_due ON events(state, due);
CREATE INDEX IF NOT EXISTS events_function ON events(function, state);
CREATE TABLE IF NOT EXISTS schedules (
    function TEXT NOT NULL,
    expression TEXT NOT NULL,
    last_fire REAL NOT NULL,
    PRIMARY KEY (function, expression)
);
"""


@dataclass
class Event:
    id: str
    function: str
    reference: str
    state: str
    attempts: int
    created: float
    due: float
    request: dict[str, Any]
    body: bytes
    last_status: int | None = None
    last_error: str | None = None
    updated: float = 0.0

    def describe(self) -> dict[str, Any]:
        """What the admin API shows: never the body or header values (they may hold secrets)."""
        return {
            "id": self.id,
            "function": self.function,
            "reference": self.reference,
            "state": self.state,
            "attempts": self.attempts,
            "created": self.created,
            "due": self.due,
            "updated": self.updated,
            "method": self.request.get("method"),
            "path": self.request.get("path"),
            "body_bytes": len(self.body),
            "last_status": self.last_status,
            "last_error": self.last_error,
        }

    def edge_request(self) -> EdgeRequest:
        """The stored request, replayed as attempt `attempts` under the invocation's id."""
        r = self.request
        drop = {INVOCATION_TYPE, INVOCATION_ID, ATTEMPT, b"x-request-id"}
        headers = [
            (k.encode("latin-1"), v.encode("latin-1")) for k, v in r["headers"] if k.encode() not in drop
        ]
        headers += [
            (b"x-request-id", self.id.encode()),
            (INVOCATION_ID, self.id.encode()),
            (ATTEMPT, str(self.attempts).encode()),
        ]
        return EdgeRequest(
            method=r["method"],
            scheme=r["scheme"],
            host=r["host"],
            path=r["path"],
            query=r["query"].encode("latin-1"),
            headers=headers,
            body=single_chunk(self.body),
            client=r["client"],
            peer=r.get("peer", ""),
            request_id=self.id,
        )


Decide = Callable[[float | None], tuple[float | None, Event | None]]


class Store(Protocol):
    """Where events live: every state change the worker makes is one call here, run on the
    queue's database thread. `owner` names this process in `running` events."""

    owner: str

    def add(self, event: Event) -> None: ...
    def claim(self, now: float, limit: int) -> list[Event]: ...
    def recover(self, now: float) -> int: ...
    def keep_alive(self, now: float) -> None: ...
    def requeue_own(self, now: float) -> int: ...
    def finish(
        self, event_id: str, state: str, *, status: int | None, error: str | None, now: float
    ) -> None: ...
    def retry(
        self,
        event_id: str,
        due: float,
        *,
        status: int | None,
        error: str | None,
        now: float,
        spend_attempt: bool = True,
    ) -> None: ...
    def redrive(self, function: str, now: float) -> int: ...
    def get(self, event_id: str) -> Event | None: ...
    def list(self, function: str, states: tuple[str, ...], limit: int = 1000) -> list[Event]: ...
    def next_due(self) -> float | None: ...
    def depth(self) -> dict[str, tuple[int, float, int]]: ...
    def stats(self) -> dict[str, tuple[int, float, int]]: ...
    def prune(self, before: float) -> int: ...
    def fire_schedule(
        self, function: str, expression: str, decide: Decide
    ) -> tuple[float | None, Event | None]:
        """Compare-and-set of a schedule's last fire time, with the event it fires, atomically.
        `decide(last fire time, None if never)` answers (new last fire time or None, event or
        None); this answers the last fire time after the call and the event fired."""
        ...

    def close(self) -> None: ...


def function_name(reference: str) -> str:
    return reference.partition(":")[0]


def _row(row: sqlite3.Row) -> Event:
    return Event(
        id=row["id"],
        function=row["function"],
        reference=row["reference"],
        state=row["state"],
        attempts=row["attempts"],
        created=row["created"],
        due=row["due"],
        request=json.loads(row["request"]),
        body=bytes(row["body"]),
        last_status=row["last_status"],
        last_error=row["last_error"],
        updated=row["updated"],
    )


def _owner_alive(owner: str | None, host: str) -> bool:
    """Whether the process named by `owner` may still be running its event."""
    if not owner:
        return False
    owner_host, _, rest = owner.partition("/")
    if owner_host != host:
        return True  # another machine: only its lease can tell
    try:
        pid = int(rest.partition("/")[0])
    except ValueError:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class EventStore:
    """The events table. Synchronous; `InvocationQueue` calls it on one thread of its own."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        # synchronous=FULL: every commit is fsync'd before it returns, so a 202 means the event is on disk.
        self.db = connect(path, timeout_s=30.0)
        self.db.row_factory = sqlite3.Row
        self.db.executescript(SCHEMA)
        self.host = socket.gethostname()
        self.owner = f"{self.host}/{os.getpid()}/{secrets.token_hex(4)}"
        self._data_version: int = self.db.execute("PRAGMA data_version").fetchone()[0]

    def close(self) -> None:
        self.db.close()

    @contextlib.contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def add(self, event: Event) -> None:
        with self.write() as db:
            self.insert(db, event)

    @staticmethod
    def insert(db: sqlite3.Connection, event: Event) -> None:
        """Insert inside the caller's write transaction (a schedule fires in the same one)."""
        db.execute(
            "INSERT INTO events (id, function, reference, state, attempts, created, due, request,"
            " body, updated) VALUES (?, ?, ?, 'queued', 0, ?, ?, ?, ?, ?)",
            (
                event.id,
                event.function,
                event.reference,
                event.created,
                event.due,
                json.dumps(event.request),
                event.body,
                event.created,
            ),
        )

    def claim(self, now: float, limit: int) -> list[Event]:
        """Mark up to `limit` due events as running in this process and return them."""
        with self.write() as db:
            rows = db.execute(
                "SELECT * FROM events WHERE state = 'queued' AND due <= ? ORDER BY due LIMIT ?",
                (now, limit),
            ).fetchall()
            if not rows:
                return []
            ids = [r["id"] for r in rows]
            db.executemany(
                "UPDATE events SET state = 'running', attempts = attempts + 1, owner = ?,"
                " lease_until = ?, updated = ? WHERE id = ?",
                [(self.owner, now + LEASE_S, now, i) for i in ids],
            )
        events = [_row(r) for r in rows]
        for e in events:
            e.state, e.attempts = "running", e.attempts + 1
        return events

    def recover(self, now: float) -> int:
        """Running events whose process is gone (or whose lease ran out) are due again now."""
        with self.write() as db:
            rows = db.execute("SELECT id, owner, lease_until FROM events WHERE state = 'running'").fetchall()
            lost = [
                r["id"]
                for r in rows
                if r["owner"] != self.owner
                and (not _owner_alive(r["owner"], self.host) or (r["lease_until"] or 0) < now)
            ]
            db.executemany(
                "UPDATE events SET state = 'queued', due = ?, owner = NULL, lease_until = NULL,"
                " attempts = MAX(attempts - 1, 0), updated = ? WHERE id = ? AND state = 'running'",
                [(now, now, i) for i in lost],
            )
        return len(lost)

    def finish(self, event_id: str, state: str, *, status: int | None, error: str | None, now: float) -> None:
        with self.write() as db:
            db.execute(
                "UPDATE events SET state = ?, last_status = ?, last_error = ?, owner = NULL,"
                " lease_until = NULL, updated = ? WHERE id = ?",
                (state, status, error, now, event_id),
            )

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
        with self.write() as db:
            db.execute(
                "UPDATE events SET state = 'queued', due = ?, last_status = ?, last_error = ?,"
                " owner = NULL, lease_until = NULL, updated = ?,"
                " attempts = attempts - ? WHERE id = ?",
                (due, status, error, now, 0 if spend_attempt else 1, event_id),
            )

    def redrive(self, function: str, now: float) -> int:
        """Every DLQ event of `function` is queued again as new: fresh age, attempts from zero."""
        with self.write() as db:
            cur = db.execute(
                "UPDATE events SET state = 'queued', attempts = 0, created = ?, due = ?, updated = ?"
                " WHERE function = ? AND state = 'dlq'",
                (now, now, now, function),
            )
            return cur.rowcount

    def get(self, event_id: str) -> Event | None:
        row = self.db.execute("SELECT * FROM events WHERE id = ?", (event_id,)).fetchone()
        return _row(row) if row else None

    def list(self, function: str, states: tuple[str, ...], limit: int = 1000) -> list[Event]:
        marks = ",".join("?" * len(states))
        rows = self.db.execute(
            f"SELECT * FROM events WHERE function = ? AND state IN ({marks}) ORDER BY created LIMIT ?",
            (function, *states, limit),
        ).fetchall()
        return [_row(r) for r in rows]

    def next_due(self) -> float | None:
        row = self.db.execute("SELECT MIN(due) AS d FROM events WHERE state = 'queued'").fetchone()
        return row["d"] if row else None

    def changed_by_others(self) -> bool:
        """Whether another connection (another process, or another one of this process) committed
        since the last call: SQLite's `data_version`, a read of the WAL index, no transaction.
        This connection's own commits do not count; the queue wakes itself for those."""
        version = self.db.execute("PRAGMA data_version").fetchone()[0]
        changed = version != self._data_version
        self._data_version = version
        return changed

    def depth(self) -> dict[str, tuple[int, float, int]]:
        return queue_depth(self.db)

    def prune(self, before: float) -> int:
        with self.write() as db:
            return db.execute(
                "DELETE FROM events WHERE state = 'succeeded' AND updated < ?", (before,)
            ).rowcount

    def keep_alive(self, now: float) -> None:
        """Nothing to renew: a dead owner on this machine is seen by its pid, others by the lease."""

    def requeue_own(self, now: float) -> int:
        """At shutdown: the events this process was running are due again now."""
        with self.write() as db:
            return db.execute(
                "UPDATE events SET state = 'queued', due = ?, owner = NULL, lease_until = NULL,"
                " attempts = MAX(attempts - 1, 0), updated = ? WHERE state = 'running' AND owner = ?",
                (now, now, self.owner),
            ).rowcount

    def stats(self) -> dict[str, tuple[int, float, int]]:
        """`depth()` on a connection of its own: callable from any thread (the /metrics scrape)."""
        reader = sqlite3.connect(self.path, timeout=5.0)
        try:
            return queue_depth(reader)
        finally:
            reader.close()

    def fire_schedule(
        self, function: str, expression: str, decide: Decide
    ) -> tuple[float | None, Event | None]:
        key = (function, expression)
        with self.write() as db:
            row = db.execute(
                "SELECT last_fire FROM schedules WHERE function = ? AND expression = ?", key
            ).fetchone()
            last = float(row[0]) if row is not None else None
            new_last, event = decide(last)
            if new_last is None:
                return last, None
            if row is None:
                db.execute("INSERT INTO schedules VALUES (?, ?, ?)", (*key, new_last))
            else:
                db.execute(
                    "UPDATE schedules SET last_fire = ? WHERE function = ? AND expression = ?",
                    (new_last, *key),
                )
            if event is not None:
                self.insert(db, event)
        return new_last, event


def queue_depth(db: sqlite3.Connection) -> dict[str, tuple[int, float, int]]:
    """Per function: (events waiting or running, oldest such event's created time, DLQ size)."""
    out: dict[str, tuple[int, float, int]] = {}
    rows = db.execute(
        "SELECT function, SUM(state IN ('queued', 'running')) AS pending,"
        " MIN(CASE WHEN state IN ('queued', 'running') THEN created END) AS oldest,"
        " SUM(state = 'dlq') AS dead FROM events GROUP BY function"
    ).fetchall()
    for function, pending, oldest, dead in rows:
        out[function] = (int(pending or 0), float(oldest or 0.0), int(dead or 0))
    return out


def stored_request(request: EdgeRequest) -> dict[str, Any]:
    return {
        "method": request.method,
        "scheme": request.scheme,
        "host": request.host,
        "path": request.path,
        "query": request.query.decode("latin-1"),
        "headers": [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.headers],
        "client": request.client,
        "peer": request.peer,
    }


def _json_response(status: int, data: dict[str, Any], extra: list[tuple[bytes, bytes]]) -> EdgeResponse:
    body = json.dumps(data).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    return EdgeResponse(status, headers + extra, single_chunk(body), served_by="invocations")


def _defaults(_name: str) -> AsyncInvoke:
    return AsyncInvoke()


class InvocationQueue:
    """The Event queue of one gateway process: accepts events and runs them with a worker."""

    def __init__(
        self,
        data_dir: Path,
        invoke: Invoke,
        *,
        settings: Settings = _defaults,
        validate: Validate | None = None,
        concurrency: int = DEFAULT_CONCURRENCY,
        clock: Callable[[], float] = time.time,
        store: Store | None = None,
    ) -> None:
        """`store`: where events live; default the SQLite `EventStore` in `data_dir`."""
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="edgefn-queue-db")
        self.store: Store = store if store is not None else EventStore(Path(data_dir) / "invocations.db")
        self.invoke = invoke
        self.settings = settings
        self.validate = validate
        self.concurrency = max(1, concurrency)
        self.clock = clock
        self.running: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._last_prune = 0.0
        self._closed = False
        # Idle passes: when nothing runs, nothing is due before `_known_due`, nobody woke us
        # and no other connection committed, a pass has nothing to find and is skipped (it was
        # a write transaction and two database-thread round trips a second).
        self._known_due: float | None = None  # None: not known, look

    async def db(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run one store call on the database thread, off the event loop (commits fsync)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: fn(*args, **kwargs))

    # accepting -------------------------------------------------------------------------------

    async def intercept(self, reference: str | None, request: EdgeRequest) -> EdgeResponse | None:
        """Answer an `Event` or `DryRun` request to a function; None means run it synchronously."""
        if reference is None:
            return None
        kind = next((v for k, v in request.headers if k == INVOCATION_TYPE), None)
        if kind is None:
            return None
        value = kind.decode("latin-1").strip()
        if value.lower() == "requestresponse":
            return None
        if value.lower() == "dryrun":
            if self.validate is not None:
                self.validate(reference)
            return EdgeResponse(204, [(INVOCATION_TYPE, b"DryRun")], served_by="invocations")
        if value.lower() != "event":
            raise BadRequest(
                f"x-edgefn-invocation-type must be RequestResponse, Event or DryRun, not {value!r}"
            )
        if self.validate is not None:
            self.validate(reference)
        event_id = await self.submit(reference, request)
        return _json_response(
            202,
            {"invocation_id": event_id, "status": "queued"},
            [(INVOCATION_ID, event_id.encode()), (INVOCATION_TYPE, b"Event")],
        )

    async def submit(self, reference: str, request: EdgeRequest, *, body: bytes | None = None) -> str:
        """Persist an Event (committed and fsync'd when this returns) and wake the worker."""
        if body is None:
            body = await read_bounded(
                request.body, MAX_EVENT_BYTES, "an Event invocation's body may be at most {limit} bytes"
            )
        now = self.clock()
        event = Event(
            id=uuid.uuid4().hex,
            function=function_name(reference),
            reference=reference,
            state="queued",
            attempts=0,
            created=now,
            due=now,
            request=stored_request(request),
            body=body,
        )
        await self.db(self.store.add, event)
        log.info(json.dumps({"event": "enqueued", "invocation_id": event.id, "function": reference}))
        self.wake()
        return event.id

    # admin -----------------------------------------------------------------------------------

    async def dead_letters(self, function: str) -> list[Event]:
        return await self.db(self.store.list, function, ("dlq",))

    async def redrive(self, function: str) -> int:
        n = await self.db(self.store.redrive, function, self.clock())
        if n:
            log.info(json.dumps({"event": "redrive", "function": function, "count": n}))
            self.wake()
        return n

    async def events(self, function: str, states: tuple[str, ...]) -> list[Event]:
        return await self.db(self.store.list, function, states)

    async def get(self, event_id: str) -> Event | None:
        return await self.db(self.store.get, event_id)

    # the worker ------------------------------------------------------------------------------

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.create_task(self._work(), name="edgefn-invocation-worker")

    async def aclose(self) -> None:
        """Stop taking events; running ones are cancelled and stay `running` until recovered."""
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for task in list(self.running):
            task.cancel()
        if self.running:
            await asyncio.gather(*self.running, return_exceptions=True)
        # Events cancelled here are ours and we are stopping: make them due again at once.
        await self.db(self.store.requeue_own, self.clock())
        await self.db(self.store.close)
        self._executor.shutdown(wait=True)

    async def _work(self) -> None:
        recovered: int | None = None
        pause = POLL_S
        while not self._closed:
            try:
                if recovered is None:
                    recovered = await self.db(self.store.recover, self.clock())
                    if recovered:
                        log.warning(json.dumps({"event": "recovered", "count": recovered}))
                await self._tick()
                pause = POLL_S
            except asyncio.CancelledError:
                raise
            except ControlPlaneError as exc:
                # The fleet's Redis is away: say so once per pass, wait longer each time.
                log.warning(
                    json.dumps({"event": "queue-unavailable", "error": str(exc), "retry_in_s": pause})
                )
                await asyncio.sleep(pause)
                pause = min(pause * 2, MAX_PAUSE_S)
            except Exception:
                log.exception("invocation worker: a pass failed; trying again")
                await asyncio.sleep(POLL_S)

    async def _tick(self) -> None:
        woken = self._wake.is_set()
        self._wake.clear()
        now = self.clock()
        if not woken and await self._nothing_new(now):
            await self._sleep(min(POLL_S, self._known_due - now if self._known_due is not None else POLL_S))
            return
        free = self.concurrency - len(self.running)
        if free > 0:
            for event in await self.db(self.store.claim, now, free):
                task = asyncio.create_task(self._run(event), name=f"edgefn-event-{event.id}")
                self.running.add(task)
                task.add_done_callback(self._done)
        if self.running:
            await self.db(self.store.keep_alive, now)
        if now - self._last_prune > 60:
            self._last_prune = now
            await self.db(self.store.recover, now)
            await self.db(self.store.prune, now - KEEP_SUCCEEDED_S)
        wait = POLL_S
        self._known_due = None
        if len(self.running) < self.concurrency:
            due = await self.db(self.store.next_due)
            self._known_due = math.inf if due is None else due
            if due is not None:
                wait = min(wait, max(0.0, due - self.clock()))
        else:
            wait = POLL_S  # a finishing task wakes us earlier
        await self._sleep(wait)

    async def _nothing_new(self, now: float) -> bool:
        """True when an idle pass would find nothing (see `_known_due`); stores that cannot tell
        cheaply (no `changed_by_others`) always get the full pass."""
        changed = getattr(self.store, "changed_by_others", None)
        if changed is None or self.running or self._known_due is None or self._known_due <= now:
            return False
        if now - self._last_prune > 60:
            return False
        return not await self.db(changed)

    async def _sleep(self, wait: float) -> None:
        if wait > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait)

    def wake(self) -> None:
        """Look for due events now; safe from any thread or event loop."""
        loop = self._loop
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if loop is None or running is loop:
            self._wake.set()
        else:
            loop.call_soon_threadsafe(self._wake.set)

    def _done(self, task: asyncio.Task[None]) -> None:
        self.running.discard(task)
        self._wake.set()
        if not task.cancelled() and (exc := task.exception()) is not None:
            # The run's outcome was not recorded: the event stays running until its owner is
            # found dead or its lease ends, then runs again (at least once).
            log.warning(
                json.dumps({"event": "outcome-not-recorded", "task": task.get_name(), "error": repr(exc)})
            )

    async def _run(self, event: Event) -> None:
        settings = self.settings(event.function)
        now = self.clock()
        if now - event.created > settings.max_event_age_s:
            await self._dead(
                event, None, f"event older than max_event_age_s ({settings.max_event_age_s:g} s)"
            )
            return
        status: int | None = None
        error: str | None = None
        try:
            response = await self.invoke(event.reference, event.edge_request())
            status = response.status
            error = await _drain(response)
            if error is None and status >= 500:
                error = f"status {status}"
        except Throttled:
            status = 429
        except GatewayError as exc:
            status, error = exc.status, f"{exc.code}: {exc.message}"
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
        if status == 429 and error is None:
            # Throttles wait for capacity without spending an attempt (as Lambda does).
            await self.db(
                self.store.retry,
                event.id,
                self.clock() + THROTTLE_DELAY_S,
                status=429,
                error="throttled",
                now=self.clock(),
                spend_attempt=False,
            )
            return
        if error is None and status is not None and status < 500:
            await self.db(
                self.store.finish, event.id, "succeeded", status=status, error=None, now=self.clock()
            )
            log.info(
                json.dumps(
                    {
                        "event": "succeeded",
                        "invocation_id": event.id,
                        "attempt": event.attempts,
                        "status": status,
                    }
                )
            )
            return
        error = (error or "failed")[:MAX_ERROR_CHARS]
        if event.attempts <= settings.max_retries:
            delay = retry_after(settings.retry_delays_s, event.attempts)
            log.info(
                json.dumps(
                    {
                        "event": "retry",
                        "invocation_id": event.id,
                        "attempt": event.attempts,
                        "in_s": delay,
                        "error": error,
                    }
                )
            )
            await self.db(
                self.store.retry, event.id, self.clock() + delay, status=status, error=error, now=self.clock()
            )
            return
        await self._dead(event, status, error)

    async def _dead(self, event: Event, status: int | None, error: str) -> None:
        await self.db(self.store.finish, event.id, "dlq", status=status, error=error, now=self.clock())
        log.warning(
            json.dumps(
                {
                    "event": "dead-letter",
                    "invocation_id": event.id,
                    "function": event.reference,
                    "attempts": event.attempts,
                    "error": error,
                }
            )
        )

    def stats(self) -> dict[str, tuple[int, float, int]]:
        """Queue depth, oldest age and DLQ size per function, read directly (for /metrics)."""
        return self.store.stats()


async def _drain(response: EdgeResponse) -> str | None:
    """Read the whole body (the function runs until it ends); a failure mid-body is an error."""
    body = response.body
    try:
        async for _ in body:
            pass
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        return f"body failed: {type(exc).__name__}: {exc}"
    finally:
        aclose = getattr(body, "aclose", None)
        if aclose is not None:
            await aclose()
    return None


def retry_after(delays: tuple[float, ...], attempt: int) -> float:
    """The delay before retry number `attempt` (1-based); the last delay repeats."""
    if not delays:
        return 0.0
    return delays[min(max(attempt, 1) - 1, len(delays) - 1)]


__all__ = [
    "INVOCATION_ID",
    "INVOCATION_TYPE",
    "MAX_EVENT_BYTES",
    "Event",
    "EventStore",
    "InvocationQueue",
    "Store",
    "function_name",
]
