"""Schedules: EventBridge `cron(...)` and `rate(...)` expressions that fire Event invocations.

    cron(min hour day-of-month month day-of-week year)   in UTC, as EventBridge
    rate(5 minutes) | rate(1 hour) | rate(2 days)

EventBridge's cron differs from croniter's in three ways, translated here: `?` means `*`,
day-of-week counts 1-7 from Sunday (croniter: 0-6), and there is a year field (croniter has none:
ticks in years the field excludes are skipped). `L`, `W` and `#` are passed to croniter, which
supports `L` and `W` in day-of-month and `#` in day-of-week; EventBridge's `5L` (last Friday)
becomes croniter's `L4`.

The last fire time of each (function, expression) is persisted next to the event queue. A tick
that came while the node was down fires once when it starts, however many were missed: the
schedule then continues from the latest tick that has passed. Firing is a compare-and-set of the
last fire time in the same transaction as the event's insert, so several worker processes (or a
restart racing a tick) never fire one tick twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from gateway.context import EdgeRequest, empty_body
from gateway.functions.queue import Event, InvocationQueue, stored_request

log = logging.getLogger("edgefn.schedules")

MAX_SLEEP_S = 30.0  # schedules of functions deployed at run time are picked up this often
_RATE = re.compile(r"rate\(\s*(\d+)\s+(minute|minutes|hour|hours|day|days)\s*\)")
_UNIT_S = {"minute": 60, "hour": 3600, "day": 86400}
_DOW_ITEM = re.compile(r"^(\d)(?:-(\d))?(?:/(\d+))?$")
FIRST_YEAR, LAST_YEAR = 1970, 2199


class ScheduleError(ValueError):
    pass


def _dow(field: str) -> str:
    """EventBridge day-of-week (1-7 = SUN-SAT, names, `L`, `#`) in croniter's terms."""
    if field in ("?", "*"):
        return "*"
    out = []
    for item in field.split(","):
        upper = item.upper()
        if upper == "L":
            out.append("6")  # the last day of the week: Saturday
            continue
        if upper.endswith("L") and upper[:-1].isdigit():
            out.append(f"L{int(upper[:-1]) - 1}")
            continue
        if "#" in upper:
            day, _, nth = upper.partition("#")
            out.append(f"{int(day) - 1}#{nth}" if day.isdigit() else upper)
            continue
        m = _DOW_ITEM.match(upper)
        if m:
            start, end, step = m.groups()
            text = str(int(start) - 1) + (f"-{int(end) - 1}" if end else "") + (f"/{step}" if step else "")
            out.append(text)
            continue
        out.append(upper)  # names (MON-FRI) and `*/n` mean the same to both
    return ",".join(out)


def _years(field: str) -> frozenset[int] | None:
    """The years a cron year field allows; None for any year."""
    if field in ("*", "?"):
        return None
    years: set[int] = set()
    for item in field.split(","):
        span, _, step_text = item.partition("/")
        step = int(step_text) if step_text else 1
        if span in ("*", "?"):
            low, high = FIRST_YEAR, LAST_YEAR
        elif "-" in span:
            a, _, b = span.partition("-")
            low, high = int(a), int(b)
        else:
            low = int(span)
            high = LAST_YEAR if step_text else low
        if step < 1 or low > high:
            raise ValueError(f"year {item!r}")
        years.update(range(low, high + 1, step))
    return frozenset(years)


@dataclass(frozen=True)
class Schedule:
    function: str
    expression: str
    period_s: float | None = None  # rate(...)
    cron: str | None = None  # croniter's 5 fields
    years: frozenset[int] | None = None

    def next_after(self, t: float) -> float | None:
        """The first tick strictly after `t` (None: the year field allows no more)."""
        if self.period_s is not None:
            return t + self.period_s
        assert self.cron is not None
        from croniter import croniter  # type: ignore[import-untyped]  # only cron(...) schedules need it: kept off the start path

        start = datetime.fromtimestamp(t, UTC)
        for _ in range(LAST_YEAR - FIRST_YEAR + 1):
            nxt = croniter(self.cron, start).get_next(datetime)
            if self.years is None or nxt.year in self.years:
                return nxt.timestamp()
            later = [y for y in self.years if y > nxt.year]
            if not later:
                return None
            start = datetime.fromtimestamp(datetime(min(later), 1, 1, tzinfo=UTC).timestamp() - 1, UTC)
        return None

    def latest_tick(self, after: float, now: float) -> float:
        """The latest tick in (after, now]; the caller knows there is at least one."""
        if self.period_s is not None:
            return after + ((now - after) // self.period_s) * self.period_s
        tick = self.next_after(after)
        assert tick is not None and tick <= now
        while True:
            nxt = self.next_after(tick)
            if nxt is None or nxt > now:
                return tick
            tick = nxt


def parse(function: str, expression: str) -> Schedule:
    text = expression.strip()
    m = _RATE.fullmatch(text)
    if m:
        value = int(m.group(1))
        if value < 1:
            raise ScheduleError(f"{expression!r}: the rate must be at least 1")
        return Schedule(function, expression, period_s=value * _UNIT_S[m.group(2).rstrip("s")])
    if not (text.startswith("cron(") and text.endswith(")")):
        raise ScheduleError(f"{expression!r}: a schedule is 'cron(m h dom mon dow year)' or 'rate(N unit)'")
    fields = text[5:-1].split()
    if len(fields) != 6:
        raise ScheduleError(f"{expression!r}: cron() takes 6 fields, got {len(fields)}")
    minute, hour, dom, month, dow, year = fields
    cron = " ".join([minute, hour, "*" if dom == "?" else dom, month, _dow(dow)])
    from croniter import croniter

    try:
        years = _years(year)
        croniter(cron, datetime.now(UTC)).get_next(datetime)
    except Exception as exc:  # croniter raises several unrelated types for a bad expression
        raise ScheduleError(f"{expression!r}: {exc}") from exc
    schedule = Schedule(function, expression, cron=cron, years=years)
    if years is not None and not years:
        raise ScheduleError(f"{expression!r}: the year field allows no year")
    return schedule


def scheduled_event(schedule: Schedule, tick: float, node: str, region: str | None) -> dict[str, object]:
    """The body a scheduled invocation receives, shaped like EventBridge's Scheduled Event."""
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Scheduled Event",
        "source": "edgefn.schedule",
        "time": datetime.fromtimestamp(tick, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": region or "",
        "node": node,
        "resources": [f"{schedule.function}/{schedule.expression}"],
        "detail": {},
    }


Listing = Callable[[], list[tuple[str, tuple[str, ...]]]]


class Scheduler:
    """Fires the schedules of every function into the Event queue (one asyncio task)."""

    def __init__(
        self,
        queue: InvocationQueue,
        listing: Listing,
        *,
        node: str = "edge-1",
        region: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.queue = queue
        self.listing = listing
        self.node = node
        self.region = region
        self.clock = clock
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()

    def schedules(self) -> list[Schedule]:
        """Parsed schedules; a bad one is logged and skipped (config ones were checked at load)."""
        out = []
        for function, expressions in self.listing():
            for expression in expressions:
                try:
                    out.append(parse(function, expression))
                except ScheduleError as exc:
                    log.error("function %s: schedule skipped: %s", function, exc)
        return out

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="edgefn-scheduler")

    def poke(self) -> None:
        """Look at the schedules again now (a function's schedule changed)."""
        self._wake.set()

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            try:
                wait = await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("scheduler pass failed; trying again")
                wait = MAX_SLEEP_S
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), max(0.01, wait))

    async def tick(self) -> float:
        """Fire what is due; return the seconds until the next tick (at most MAX_SLEEP_S)."""
        now = self.clock()
        wait = MAX_SLEEP_S
        for schedule in self.schedules():
            nxt, fired = await self.queue.db(self._fire_due, schedule, now)
            if fired is not None:
                event, tick = fired
                log.info(
                    json.dumps(
                        {
                            "event": "schedule-fired",
                            "function": schedule.function,
                            "schedule": schedule.expression,
                            "tick": tick,
                            "invocation_id": event.id,
                        }
                    )
                )
                self.queue.wake()
            if nxt is not None:
                wait = min(wait, nxt - self.clock())
        return wait

    def _fire_due(self, schedule: Schedule, now: float) -> tuple[float | None, tuple[Event, float] | None]:
        """One schedule, on the database thread: fire once if a tick has passed (the missed ticks
        collapse into that one); answer the next tick and what was fired."""

        def decide(last: float | None) -> tuple[float | None, Event | None]:
            if last is None:
                # A new schedule starts now: its first tick is the next one, not one in the past.
                return now, None
            due = schedule.next_after(last)
            if due is None or due > now:
                return None, None
            tick = schedule.latest_tick(last, now)
            return tick, self._event(schedule, tick, now)

        last, event = self.queue.store.fire_schedule(schedule.function, schedule.expression, decide)
        if last is None:
            return None, None
        return schedule.next_after(last), ((event, last) if event is not None else None)

    def _event(self, schedule: Schedule, tick: float, now: float) -> Event:
        body = json.dumps(scheduled_event(schedule, tick, self.node, self.region)).encode()
        request = EdgeRequest(
            method="POST",
            scheme="http",
            host=f"{schedule.function}.schedule.edgefn",
            path="/",
            query=b"",
            headers=[
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"x-edgefn-trigger", b"schedule"),
                (b"x-edgefn-schedule", schedule.expression.encode("latin-1")),
                (b"x-edgefn-node", self.node.encode()),
            ],
            body=empty_body(),
            client="schedule",
        )
        return Event(
            id=uuid.uuid4().hex,
            function=schedule.function,
            reference=schedule.function,
            state="queued",
            attempts=0,
            created=now,
            due=now,
            request=stored_request(request),
            body=body,
        )
