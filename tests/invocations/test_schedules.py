"""Schedules: EventBridge cron/rate translated for croniter, and missed ticks firing once."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gateway.context import EdgeRequest, EdgeResponse
from gateway.functions.queue import InvocationQueue
from gateway.functions.schedules import ScheduleError, Scheduler, parse
from tests.invocations.conftest import ControlledOrigin


def ts(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def iso(t: float | None) -> str | None:
    return None if t is None else datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M")


SUNDAY_NIGHT = "2026-11-22T23:00:00"  # the next day is Monday 23 November 2026


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("cron(0 12 * * ? *)", "2026-11-23T12:00"),
        ("cron(0 10 ? * MON-FRI *)", "2026-11-23T10:00"),
        ("cron(0 10 ? * 2-6 *)", "2026-11-23T10:00"),  # 2-6 = MON-FRI in EventBridge's numbering
        ("cron(0 8 ? * 1 *)", "2026-11-29T08:00"),  # 1 = Sunday
        ("cron(15 8 ? * 6L *)", "2026-11-27T08:15"),  # last Friday of the month
        ("cron(0 9 ? * 2#1 *)", "2026-12-07T09:00"),  # first Monday
        ("cron(0 0 L * ? *)", "2026-11-30T00:00"),  # last day of the month
        ("cron(0 0 1 1 ? 2028)", "2028-01-01T00:00"),  # the year field skips 2027
        ("cron(0/15 * * * ? *)", "2026-11-22T23:15"),
        ("rate(5 minutes)", "2026-11-22T23:05"),
        ("rate(1 hour)", "2026-11-23T00:00"),
        ("rate(2 days)", "2026-11-24T23:00"),
    ],
)
def test_next_tick(expression: str, expected: str) -> None:
    assert iso(parse("f", expression).next_after(ts(SUNDAY_NIGHT))) == expected


def test_a_year_in_the_past_never_fires_and_bad_expressions_are_refused() -> None:
    assert parse("f", "cron(0 0 1 1 ? 2020)").next_after(ts(SUNDAY_NIGHT)) is None
    for bad in ("cron(0 12 * * ?)", "cron(61 12 * * ? *)", "every(5 minutes)", "rate(0 minutes)"):
        with pytest.raises(ScheduleError):
            parse("f", bad)


async def _never(reference: str, request: EdgeRequest) -> EdgeResponse:
    raise AssertionError("the worker is not started in these tests")


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def queued(data_dir: Path) -> list[tuple[str, str, bytes]]:
    db = sqlite3.connect(data_dir / "invocations.db")
    rows = db.execute("SELECT function, request, body FROM events WHERE state = 'queued'").fetchall()
    db.close()
    return rows


def test_a_missed_schedule_fires_once_not_once_per_tick(tmp_path: Path) -> None:
    async def scenario() -> None:
        clock = Clock(ts("2026-11-22T10:00:30"))
        listing = lambda: [("job", ("rate(1 minute)", "cron(0 * * * ? *)"))]  # noqa: E731
        queue = InvocationQueue(tmp_path, _never, clock=clock)
        scheduler = Scheduler(queue, listing, clock=clock, node="n1")
        await scheduler.start()
        await scheduler.aclose()  # the test drives tick() by hand
        wait = await scheduler.tick()  # new schedules start now: nothing fires
        assert queued(tmp_path) == [] and 0 < wait <= 60
        clock.now += 60
        await scheduler.tick()
        assert len(queued(tmp_path)) == 1  # the minute's tick; the hourly one is not due
        # the node is down for three hours: each schedule fires once when it is back
        clock.now += 3 * 3600
        await scheduler.tick()
        assert len(queued(tmp_path)) == 3
        await scheduler.tick()
        assert len(queued(tmp_path)) == 3
        # a second process sharing the database at the same moment fires nothing more
        other = Scheduler(queue, listing, clock=clock, node="n2")
        await other.tick()
        assert len(queued(tmp_path)) == 3
        # the rate keeps its phase: the next tick is a whole minute after the last one
        clock.now += 59.9
        await scheduler.tick()
        assert len(queued(tmp_path)) == 3
        clock.now += 0.2
        await scheduler.tick()
        assert len(queued(tmp_path)) == 4
        await queue.aclose()

    asyncio.run(scenario())
    function, request, body = queued(tmp_path)[0]
    assert function == "job"
    stored = json.loads(request)
    assert stored["method"] == "POST" and stored["path"] == "/"
    assert ["x-edgefn-trigger", "schedule"] in stored["headers"]
    doc = json.loads(body)
    assert doc["detail-type"] == "Scheduled Event" and doc["resources"] == ["job/rate(1 minute)"]


CONFIG = """
[origins.web]
endpoints = [{{ url = "{origin}" }}]

[functions.fetch]
component = "{{fetch}}"
outbound = ["web"]
schedule = ["rate(1 minute)"]
"""


def test_schedule_missed_while_down_fires_once_on_start(
    node_factory, controlled_origin: ControlledOrigin
) -> None:
    node = node_factory(CONFIG.format(origin=controlled_origin.url))
    node.stop()
    db_path = node.config.parent / "data" / "invocations.db"
    db = sqlite3.connect(db_path)
    with db:
        [(last,)] = db.execute("SELECT last_fire FROM schedules").fetchall()
        db.execute("UPDATE schedules SET last_fire = ?", (time.time() - 3 * 3600,))
    db.close()
    assert last > time.time() - 120
    node.start()
    controlled_origin.wait_for(lambda: controlled_origin.paths() == ["/"])
    time.sleep(1.5)
    assert controlled_origin.paths() == ["/"]  # once, not 180 times
    hit = controlled_origin.hits[0]
    assert hit.headers["x-from-function"] == "fetch"
