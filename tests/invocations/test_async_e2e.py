"""Event invocations through a real `edgefn serve`: 202 then run, retries, DLQ, redrive, kill -9.

The function is the `fetch` example: it calls the test's origin with the request's path, so the
origin's record says what ran and how often; `/fail/...` answers 503, which the function passes on
(a failure), and `/slow/...` takes half a second.
"""

from __future__ import annotations

import json
import sqlite3
import time

import httpx

from tests.invocations.conftest import ControlledOrigin, Node

CONFIG = """
[origins.web]
endpoints = [{{ url = "{origin}" }}]

[functions.fetch]
component = "{{fetch}}"
outbound = ["web"]
timeout_s = 10
async = {{ max_retries = 2, retry_delays_s = [0.2, 0.3], max_event_age_s = 600 }}

[[routes]]
name = "fetch"
path = "/f/{{*rest}}"
function = "fetch"
rewrite = {{ path = "/{{rest}}" }}
"""

EVENT = {"x-edgefn-invocation-type": "Event"}


def event(node: Node, path: str, **kwargs: object) -> httpx.Response:
    return httpx.post(f"{node.url}/f/{path}", headers=EVENT, timeout=10, **kwargs)  # type: ignore[arg-type]


def test_event_answers_202_then_runs(node_factory, controlled_origin: ControlledOrigin) -> None:
    node = node_factory(CONFIG.format(origin=controlled_origin.url))
    r = event(node, "ok/1", content=b"payload")
    assert r.status_code == 202, r.text
    invocation_id = r.json()["invocation_id"]
    assert r.headers["x-edgefn-invocation-id"] == invocation_id
    assert r.headers["x-request-id"]
    controlled_origin.wait_for(lambda: "/ok/1" in controlled_origin.paths())
    deadline = time.monotonic() + 10
    while (state := node.admin_get(f"/invocations/{invocation_id}"))["state"] != "succeeded":
        assert time.monotonic() < deadline, state
        time.sleep(0.05)
    assert state["attempts"] == 1 and state["last_status"] == 200
    # the run is logged under the invocation id, Lambda style
    lines = node.admin_get(f"/functions/fetch/logs?request_id={invocation_id}")["lines"]
    messages = [line["message"] for line in lines]
    assert messages[0] == f"START RequestId: {invocation_id} Version: $LATEST"
    assert f"END RequestId: {invocation_id}" in messages
    report = next(m for m in messages if m.startswith("REPORT"))
    assert "Billed Duration: " in report and "Memory Size: 128 MB" in report
    metrics = httpx.get(f"{node.admin}/metrics", headers={"authorization": "Bearer t0ken-for-tests"}).text
    assert 'edgefn_function_invocations_total{function="fetch",version="$LATEST"} 1.0' in metrics
    assert 'edgefn_async_queue_depth{function="fetch"} 0.0' in metrics
    assert 'edgefn_dlq_size{function="fetch"} 0.0' in metrics


def test_dry_run_validates_without_running(node_factory, controlled_origin: ControlledOrigin) -> None:
    node = node_factory(CONFIG.format(origin=controlled_origin.url))
    r = httpx.get(f"{node.url}/f/dry", headers={"x-edgefn-invocation-type": "DryRun"}, timeout=10)
    assert r.status_code == 204, r.text
    r = httpx.get(f"{node.url}/f/bad", headers={"x-edgefn-invocation-type": "Later"}, timeout=10)
    assert r.status_code == 400 and r.json()["error"]["code"] == "bad_request"
    r = event(node, "big", content=b"x" * (256 * 1024 + 1))
    assert r.status_code == 413, r.text
    r = event(node, "fits", content=b"x" * (256 * 1024))
    assert r.status_code == 202, r.text
    controlled_origin.wait_for(lambda: "/fits" in controlled_origin.paths())
    assert "/dry" not in controlled_origin.paths() and "/big" not in controlled_origin.paths()
    # the synchronous path is unchanged
    r = httpx.get(f"{node.url}/f/sync", timeout=10)
    assert r.status_code == 200 and r.text == "fetched: origin 200 /sync"


def test_failure_is_retried_twice_then_dead_lettered_and_redriven(
    node_factory, controlled_origin: ControlledOrigin
) -> None:
    node = node_factory(CONFIG.format(origin=controlled_origin.url))
    r = event(node, "fail/a")
    assert r.status_code == 202
    invocation_id = r.json()["invocation_id"]
    deadline = time.monotonic() + 15
    while not (dlq := node.admin_get("/functions/fetch/dlq")["events"]):
        assert time.monotonic() < deadline, node.log()[-3000:]
        time.sleep(0.05)
    hits = [h for h in controlled_origin.hits if h.path == "/fail/a"]
    assert len(hits) == 3  # 1 try + 2 retries
    # the retries waited (0.2 s, then 0.3 s) and carried the attempt number
    assert hits[1].at - hits[0].at >= 0.18 and hits[2].at - hits[1].at >= 0.28
    [dead] = dlq
    assert dead["id"] == invocation_id and dead["attempts"] == 3 and dead["last_status"] == 503
    assert "503" in dead["last_error"]
    listed = node.cli("dlq", "list", "fetch")
    assert listed.returncode == 0, listed.stderr
    assert invocation_id in listed.stdout and "status 503" in listed.stdout
    metrics = httpx.get(f"{node.admin}/metrics", headers={"authorization": "Bearer t0ken-for-tests"}).text
    assert 'edgefn_dlq_size{function="fetch"} 1.0' in metrics
    assert 'edgefn_function_errors_total{function="fetch",version="$LATEST"} 3.0' in metrics

    controlled_origin.fail = False
    redriven = node.cli("dlq", "redrive", "fetch")
    assert redriven.returncode == 0, redriven.stderr
    assert "redrove 1 event" in redriven.stdout
    controlled_origin.wait_for(lambda: controlled_origin.paths("/fail/a").count("/fail/a") == 4)
    deadline = time.monotonic() + 10
    while node.admin_get(f"/invocations/{invocation_id}")["state"] != "succeeded":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert node.admin_get("/functions/fetch/dlq")["events"] == []
    assert node.cli("dlq", "list", "fetch").stdout.startswith("no events")


def test_events_older_than_max_age_go_to_the_dlq(node_factory, controlled_origin: ControlledOrigin) -> None:
    config = CONFIG.format(origin=controlled_origin.url).replace(
        "max_event_age_s = 600", "max_event_age_s = 60"
    )
    node = node_factory(config)
    controlled_origin.fail = True
    r = event(node, "fail/old")
    assert r.status_code == 202
    # first it fails every attempt and lands in the DLQ; then the test makes it old and due again
    deadline = time.monotonic() + 15
    while not node.admin_get("/functions/fetch/dlq")["events"]:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    node.stop()
    # Age is measured from acceptance: an event due again after its age is dead-lettered unrun.
    db = sqlite3.connect(node.config.parent / "data" / "invocations.db")
    with db:
        db.execute("UPDATE events SET state = 'queued', attempts = 0, created = created - 120, due = 0")
    db.close()
    before = len(controlled_origin.paths("/fail/old"))
    node.start()
    deadline = time.monotonic() + 10
    while True:
        [dead] = node.admin_get("/functions/fetch/dlq")["events"] or [None]
        if dead and "max_event_age_s" in (dead["last_error"] or ""):
            break
        assert time.monotonic() < deadline, dead
        time.sleep(0.05)
    assert len(controlled_origin.paths("/fail/old")) == before


def test_twenty_queued_events_survive_kill_9(node_factory, controlled_origin: ControlledOrigin) -> None:
    controlled_origin.delay_s = 0.5
    node = node_factory(CONFIG.format(origin=controlled_origin.url), env={"EDGEFN_ASYNC_CONCURRENCY": "2"})
    ids = []
    for i in range(20):
        r = event(node, f"slow/{i}", content=json.dumps({"n": i}).encode())
        assert r.status_code == 202, r.text
        ids.append(r.json()["invocation_id"])
    # 2 at a time, 0.5 s each: about 5 s for all 20; kill while most are still queued
    controlled_origin.wait_for(lambda: len(controlled_origin.paths("/slow/")) >= 2)
    node.kill()
    done_before = set(controlled_origin.paths("/slow/"))
    assert len(done_before) < 20, "everything ran before the kill; the test proved nothing"
    node.start()
    controlled_origin.wait_for(
        lambda: set(controlled_origin.paths("/slow/")) == {f"/slow/{i}" for i in range(20)}, timeout=30
    )
    deadline = time.monotonic() + 15
    while True:
        states = {node.admin_get(f"/invocations/{i}")["state"] for i in ids}
        if states == {"succeeded"}:
            break
        assert time.monotonic() < deadline, states
        time.sleep(0.1)
    # the runs cut short by the kill were found and ran again (at least once, same ids)
    assert '"event": "recovered"' in node.log()


GUARDED = """
[origins.web]
endpoints = [{{ url = "{origin}" }}]

[functions.fetch]
component = "{{fetch}}"
outbound = ["web"]

[functions.stream]
component = "{{stream}}"
timeout_s = 1
async = {{ max_retries = 1, retry_delays_s = [0.1] }}

[[routes]]
name = "guarded"
path = "/g/{{*rest}}"
function = "fetch"
rewrite = {{ path = "/{{rest}}" }}
auth = {{ type = "api_key", keys_env = "KEYS" }}

[[routes]]
name = "stream"
path = "/stream"
function = "stream"
"""


def test_event_needs_the_routes_auth_and_a_timeout_is_a_failure(
    node_factory, controlled_origin: ControlledOrigin
) -> None:
    node = node_factory(GUARDED.format(origin=controlled_origin.url), env={"KEYS": "k1"})
    r = httpx.post(f"{node.url}/g/nokey", headers=EVENT, timeout=10)
    assert r.status_code == 401
    r = httpx.post(f"{node.url}/g/key", headers={**EVENT, "x-api-key": "k1"}, timeout=10)
    assert r.status_code == 202
    controlled_origin.wait_for(lambda: "/key" in controlled_origin.paths())
    assert "/nokey" not in controlled_origin.paths()
    # the stream sends its head at once, then runs past its 1 s timeout: a failure, retried once
    r = httpx.get(f"{node.url}/stream?n=3&ms=800", headers=EVENT, timeout=10)
    assert r.status_code == 202
    deadline = time.monotonic() + 15
    while not (dead := node.admin_get("/functions/stream/dlq")["events"]):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert dead[0]["attempts"] == 2 and "body failed" in dead[0]["last_error"], dead
    assert "FunctionTimeout" in dead[0]["last_error"] or "timeout" in dead[0]["last_error"].lower()
