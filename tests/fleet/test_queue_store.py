"""The Redis event store's state changes on a real redis-server: the SQLite store's rules, plus
take-over after a lease, renewal, and completion once per invocation id."""

from __future__ import annotations

import time

import pytest
import redis

from edge.sync import ControlPlane, ControlPlaneError
from edge.sync_queue import RedisEventStore
from gateway.functions.queue import Event
from tests.servers import free_port

LEASE_S = 0.6


def event(i: int, now: float, function: str = "fn") -> Event:
    request = {
        "method": "POST",
        "scheme": "http",
        "host": "h",
        "path": f"/{i}",
        "query": "",
        "headers": [],
        "client": "c",
    }
    return Event(f"e{i}", function, f"{function}:live", "queued", 0, now, now, request, b"body")


def store(url: str, owner: str) -> RedisEventStore:
    return RedisEventStore(ControlPlane.parse(f"{url}?lease_s={LEASE_S}"), owner, Event)


def test_claim_is_exclusive_and_counts_attempts(redis_url: str) -> None:
    a, b = store(redis_url, "a"), store(redis_url, "b")
    for i in range(5):
        a.add(event(i, 100.0))
    first = a.claim(100.0, 3)
    second = b.claim(100.0, 10)
    assert sorted(e.id for e in first + second) == [f"e{i}" for i in range(5)]
    assert len(first) == 3 and len(second) == 2
    assert all(e.attempts == 1 and e.state == "running" for e in first + second)
    assert a.claim(100.0, 10) == [] and b.claim(100.0, 10) == []
    # a delayed event is claimed only once due
    delayed = event(9, 100.0)
    delayed.due = 200.0
    a.add(delayed)
    assert a.claim(150.0, 10) == []
    assert [e.id for e in b.claim(200.0, 10)] == ["e9"]
    got = a.get("e9")
    assert got is not None and got.request["path"] == "/9" and got.body == b"body"


def test_a_dead_owners_event_is_taken_over_after_the_lease(redis_url: str) -> None:
    a, b = store(redis_url, "a"), store(redis_url, "b")
    a.add(event(1, 100.0))
    [mine] = a.claim(100.0, 1)
    assert b.claim(100.0, 10) == []  # a holds it within its lease
    time.sleep(LEASE_S + 0.3)  # a "dies": it stops renewing
    [taken] = b.claim(101.0, 10)
    assert taken.id == mine.id and taken.attempts == 1  # an interrupted run spends no attempt
    # a comes back late: its retry is refused (b owns the event now) ...
    a.retry("e1", 102.0, status=503, error="late", now=101.0)
    assert a.get("e1").state == "running"  # type: ignore[union-attr]
    # ... its success counts once; b's later success is a duplicate and changes nothing
    a.finish("e1", "succeeded", status=200, error=None, now=101.5)
    b.finish("e1", "succeeded", status=201, error=None, now=102.0)
    done = b.get("e1")
    assert done is not None and (done.state, done.last_status) == ("succeeded", 200)
    assert b.claim(103.0, 10) == [] and a.claim(103.0, 10) == []


def test_renewal_keeps_a_running_event(redis_url: str) -> None:
    a, b = store(redis_url, "a"), store(redis_url, "b")
    a.add(event(1, 100.0))
    a.claim(100.0, 1)
    deadline = time.monotonic() + LEASE_S * 3
    while time.monotonic() < deadline:
        a.keep_alive(time.time())
        assert b.claim(100.0, 10) == []
        time.sleep(LEASE_S / 6)


def test_a_completed_invocation_is_not_run_again(redis_url: str, redis_client: redis.Redis) -> None:
    a = store(redis_url, "a")
    a.add(event(1, 100.0))
    [e] = a.claim(100.0, 1)
    a.finish(e.id, "succeeded", status=200, error=None, now=100.5)
    # a duplicate delivery of the same id (e.g. re-sent by a process that lost its reply)
    redis_client.xadd("edgefn:q:stream", {"id": "e1"})
    assert a.claim(101.0, 10) == []
    assert redis_client.xlen("edgefn:q:stream") == 0  # acknowledged and deleted


def test_retry_throttle_dlq_redrive_and_depth(redis_url: str) -> None:
    s = store(redis_url, "a")
    s.add(event(1, 100.0))
    [e] = s.claim(100.0, 1)
    s.retry(e.id, 160.0, status=503, error="status 503", now=100.5)
    got = s.get(e.id)
    assert got is not None and (got.state, got.attempts, got.due, got.last_status) == (
        "queued",
        1,
        160.0,
        503,
    )
    assert s.next_due() == 160.0
    assert s.claim(159.0, 1) == []
    # a throttle gives the attempt back
    [e] = s.claim(160.0, 1)
    assert e.attempts == 2
    s.retry(e.id, 161.0, status=429, error="throttled", now=160.0, spend_attempt=False)
    assert s.get(e.id).attempts == 1  # type: ignore[union-attr]
    [e] = s.claim(161.0, 1)
    s.finish(e.id, "dlq", status=503, error="status 503", now=162.0)
    assert s.depth() == {"fn": (0, 0.0, 1)} == s.stats()
    assert [d.id for d in s.list("fn", ("dlq",))] == ["e1"]
    assert s.redrive("fn", 500.0) == 1
    again = s.get("e1")
    assert again is not None and (again.state, again.attempts, again.created) == ("queued", 0, 500.0)
    assert s.depth() == {"fn": (1, 500.0, 0)}
    [e] = s.claim(500.0, 1)
    s.finish(e.id, "succeeded", status=200, error=None, now=501.0)
    assert [d.state for d in s.list("fn", ("succeeded", "dlq"))] == ["succeeded"]
    assert s.prune(400.0) == 0 and s.prune(502.0) == 1 and s.get("e1") is None


def test_requeue_own_at_shutdown(redis_url: str) -> None:
    a, b = store(redis_url, "a"), store(redis_url, "b")
    a.add(event(1, 100.0))
    a.add(event(2, 100.0))
    assert len(a.claim(100.0, 2)) == 2
    assert a.requeue_own(100.0) == 2
    claimed = b.claim(100.0, 10)
    assert sorted(e.id for e in claimed) == ["e1", "e2"]
    assert all(e.attempts == 1 for e in claimed)


def test_a_schedule_tick_fires_on_one_node(redis_url: str) -> None:
    a, b = store(redis_url, "a"), store(redis_url, "b")

    def decide(last: float | None) -> tuple[float | None, Event | None]:
        if last is None:
            return 100.0, None
        if last >= 160.0:
            return None, None
        return 160.0, event(7, 160.0)

    assert a.fire_schedule("fn", "rate(1 minute)", decide) == (100.0, None)
    fired = [s.fire_schedule("fn", "rate(1 minute)", decide) for s in (a, b)]
    assert fired[0][0] == 160.0 and fired[0][1] is not None and fired[0][1].id == "e7"
    assert fired[1] == (160.0, None)
    assert [e.id for e in b.claim(160.0, 10)] == ["e7"]


def test_an_unreachable_redis_is_a_clear_error() -> None:
    with pytest.raises(ControlPlaneError, match="event queue"):
        store(f"redis://127.0.0.1:{free_port()}/0", "a")


def test_control_plane_url_settings() -> None:
    plane = ControlPlane.parse("redis://:pw@127.0.0.1:6390/2?lease_s=3&wait_replicas=1&prefix=f1:&db=2")
    assert (plane.lease_s, plane.wait_replicas, plane.prefix) == (3.0, 1, "f1:")
    assert plane.url == "redis://:pw@127.0.0.1:6390/2?db=2" and "pw" not in plane.shown
    for bad in ("http://x", "redis://h?lease_s=x", "redis://h?lease_s=0", "redis://h?wait_replicas=-1"):
        with pytest.raises(ValueError, match="control_plane"):
            ControlPlane.parse(bad)
