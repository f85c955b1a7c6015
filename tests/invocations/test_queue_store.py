"""The event store's state changes on a real SQLite file: claim, recover, retry, redrive."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from gateway.functions.queue import Event, EventStore, retry_after


def event(i: int, now: float) -> Event:
    request = {
        "method": "POST",
        "scheme": "http",
        "host": "h",
        "path": f"/{i}",
        "query": "",
        "headers": [],
        "client": "c",
    }
    return Event(f"e{i}", "fn", "fn:live", "queued", 0, now, now, request, b"body")


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_claim_is_exclusive_and_counts_attempts(tmp_path: Path) -> None:
    a, b = EventStore(tmp_path / "q.db"), EventStore(tmp_path / "q.db")
    for i in range(5):
        a.add(event(i, 100.0))
    first = a.claim(100.0, 3)
    second = b.claim(100.0, 10)
    assert [e.id for e in first] == ["e0", "e1", "e2"] and [e.id for e in second] == ["e3", "e4"]
    assert all(e.attempts == 1 and e.state == "running" for e in first + second)
    assert a.claim(100.0, 10) == []
    # not yet due: not claimed
    a.add(event(9, 200.0))
    assert a.claim(150.0, 10) == []
    assert [e.id for e in a.claim(200.0, 10)] == ["e9"]


def test_recover_requeues_only_events_of_dead_processes(tmp_path: Path) -> None:
    store = EventStore(tmp_path / "q.db")
    for i in range(3):
        store.add(event(i, 100.0))
    store.claim(100.0, 3)
    host = store.host
    with store.write() as db:
        db.execute("UPDATE events SET owner = ? WHERE id = 'e0'", (f"{host}/{dead_pid()}/x",))
        db.execute("UPDATE events SET owner = ? WHERE id = 'e1'", (f"{host}/{os.getpid()}/other",))
    restarted = EventStore(tmp_path / "q.db")  # a new process: a different owner token
    assert restarted.recover(101.0) == 1
    e0, e1, e2 = (restarted.get(f"e{i}") for i in range(3))
    assert e0 is not None and e0.state == "queued" and e0.attempts == 0 and e0.due == 101.0
    assert e1 is not None and e1.state == "running"  # its owner is alive
    assert e2 is not None and e2.state == "running"
    # a lease that ran out frees an event whatever its owner
    assert restarted.recover(100.0 + 901.0) == 2


def test_retry_redrive_and_depth(tmp_path: Path) -> None:
    store = EventStore(tmp_path / "q.db")
    store.add(event(1, 100.0))
    [e] = store.claim(100.0, 1)
    store.retry(e.id, 160.0, status=503, error="status 503", now=100.5)
    got = store.get(e.id)
    assert got is not None and (got.state, got.attempts, got.due, got.last_status) == (
        "queued",
        1,
        160.0,
        503,
    )
    # a throttle gives the attempt back
    [e] = store.claim(160.0, 1)
    store.retry(e.id, 161.0, status=429, error="throttled", now=160.0, spend_attempt=False)
    assert store.get(e.id).attempts == 1  # type: ignore[union-attr]
    [e] = store.claim(161.0, 1)
    store.finish(e.id, "dlq", status=503, error="status 503", now=162.0)
    assert store.depth() == {"fn": (0, 0.0, 1)}
    assert [d.id for d in store.list("fn", ("dlq",))] == ["e1"]
    assert store.redrive("fn", 500.0) == 1
    again = store.get("e1")
    assert again is not None and (again.state, again.attempts, again.created) == ("queued", 0, 500.0)
    assert store.depth() == {"fn": (1, 500.0, 0)}


def test_retry_delays_repeat_the_last() -> None:
    assert [retry_after((60.0, 120.0), n) for n in (1, 2, 3)] == [60.0, 120.0, 120.0]
    assert retry_after((), 1) == 0.0


def test_replayed_request_carries_the_invocation_id_and_attempt(tmp_path: Path) -> None:
    e = event(1, 100.0)
    e.request["headers"] = [("x-edgefn-invocation-type", "Event"), ("x-request-id", "old"), ("a", "b")]
    e.attempts = 2
    request = e.edge_request()
    assert request.request_id == "e1"
    assert request.headers == [
        (b"a", b"b"),
        (b"x-request-id", b"e1"),
        (b"x-edgefn-invocation-id", b"e1"),
        (b"x-edgefn-attempt", b"2"),
    ]
