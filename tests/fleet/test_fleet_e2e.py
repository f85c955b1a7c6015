"""Two or three real `edgefn serve` processes sharing one real redis-server.

Each node has its own ports and data directory; what they share, they share only through Redis:
the Event queue, reserved concurrency, cache purges, the registry and its change notices.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.fleet.conftest import LEASE_S, TOKEN, ControlledOrigin, Fleet, Node

AUTH = {"authorization": f"Bearer {TOKEN}"}
EVENT = {"x-edgefn-invocation-type": "Event"}

FETCH = """
[origins.web]
endpoints = [{{ url = "{origin}" }}]

[functions.fetch]
component = "{{fetch}}"
outbound = ["web"]
timeout_s = 20
reserved_concurrency = {reserved}
async = {{ max_retries = 2, retry_delays_s = [0.2, 0.3], max_event_age_s = 600 }}

[[routes]]
name = "fetch"
path = "/f/{{*rest}}"
function = "fetch"
rewrite = {{ path = "/{{rest}}" }}

[[routes]]
name = "cached"
path = "/c/{{*rest}}"
origin = "web"
cache = {{ ttl_s = 600 }}
"""


def fetch_config(origin: ControlledOrigin, reserved: int = 0) -> str:
    return FETCH.format(origin=origin.url, reserved=reserved)


def until(predicate: Callable[[], object], timeout: float, what: str, seen: list[str] | None = None) -> None:
    """Poll `predicate` for up to `timeout` s; the failure names `what` and the last `seen`."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}; last seen: {seen}"
        time.sleep(0.02)


def state_of(node: Node, invocation_id: str) -> dict:
    return node.admin_get(f"/invocations/{invocation_id}")


# -- the Event queue ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kill", ["right-after-202", "mid-run"])
def test_an_event_accepted_by_a_node_that_dies_runs_on_another(
    fleet: Fleet, controlled_origin: ControlledOrigin, kill: str
) -> None:
    controlled_origin.delay_s = 2.0
    a, b = fleet(fetch_config(controlled_origin), n=2)
    r = httpx.post(f"{a.url}/f/slow/k", headers=EVENT, content=b"payload", timeout=10)
    assert r.status_code == 202, r.text
    invocation_id = r.json()["invocation_id"]
    if kill == "mid-run":
        controlled_origin.wait_for(lambda: "/slow/k" in controlled_origin.paths())  # a is running it
    a.kill()
    killed_at = time.time()
    until(lambda: state_of(b, invocation_id)["state"] == "succeeded", 60, "the event ran on b")
    state = state_of(b, invocation_id)
    assert state["attempts"] == 1 and state["last_status"] == 200  # a cut-short run is no attempt
    assert any(h.path == "/slow/k" and h.at > killed_at for h in controlled_origin.hits)
    if kill == "mid-run":
        assert '"event": "taken-over"' in b.log()  # b took a's pending entry after a's lease


def test_retries_dead_letters_and_redrive_work_across_nodes(
    fleet: Fleet, controlled_origin: ControlledOrigin
) -> None:
    a, b = fleet(fetch_config(controlled_origin), n=2)
    r = httpx.post(f"{a.url}/f/fail/x", headers=EVENT, timeout=10)
    assert r.status_code == 202
    invocation_id = r.json()["invocation_id"]
    until(lambda: b.admin_get("/functions/fetch/dlq")["events"], 30, "the event is in the DLQ, seen from b")
    [dead] = b.admin_get("/functions/fetch/dlq")["events"]
    assert dead["id"] == invocation_id and dead["attempts"] == 3 and dead["last_status"] == 503
    assert controlled_origin.paths("/fail/x").count("/fail/x") == 3  # 1 try + 2 retries, fleet-wide
    metrics = httpx.get(f"{a.admin}/metrics", headers=AUTH, timeout=10).text
    assert 'edgefn_dlq_size{function="fetch"} 1.0' in metrics  # the queue is the fleet's

    controlled_origin.fail = False
    redriven = b.cli("dlq", "redrive", "fetch")
    assert redriven.returncode == 0 and "redrove 1 event" in redriven.stdout, redriven.stderr
    until(lambda: state_of(a, invocation_id)["state"] == "succeeded", 30, "the redriven event ran")
    assert controlled_origin.paths("/fail/x").count("/fail/x") == 4
    assert a.admin_get("/functions/fetch/dlq")["events"] == []


# -- reserved concurrency ----------------------------------------------------------------------------


def concurrently(urls: list[str]) -> list[httpx.Response]:
    answers: list[httpx.Response | None] = [None] * len(urls)

    def get(i: int) -> None:
        answers[i] = httpx.get(urls[i], timeout=60)

    threads = [threading.Thread(target=get, args=(i,)) for i in range(len(urls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=90)
    assert all(a is not None for a in answers)
    return answers  # type: ignore[return-value]


def test_reserved_concurrency_holds_across_nodes(fleet: Fleet, controlled_origin: ControlledOrigin) -> None:
    controlled_origin.delay_s = 4.0
    a, b = fleet(fetch_config(controlled_origin, reserved=2), n=2)
    answers = concurrently([f"{n.url}/f/slow/{i}" for i, n in enumerate((a, b, a, b))])
    statuses = sorted(r.status_code for r in answers)
    assert statuses == [200, 200, 429, 429], [(r.status_code, r.text[:200]) for r in answers]
    for r in answers:
        if r.status_code == 429:
            assert r.headers["retry-after"] and r.json()["error"]["code"] == "throttled"


def test_a_dead_nodes_slots_come_back_after_its_lease(
    fleet: Fleet, controlled_origin: ControlledOrigin
) -> None:
    controlled_origin.delay_s = 30.0  # a's two invocations would hold their slots this long

    def hold(url: str) -> None:
        with contextlib.suppress(httpx.TransportError):  # a is killed under this request
            httpx.get(url, timeout=60)

    a, b = fleet(fetch_config(controlled_origin, reserved=2), n=2)
    for i in range(2):
        threading.Thread(target=hold, args=(f"{a.url}/f/slow/a{i}",), daemon=True).start()
    controlled_origin.wait_for(lambda: len(controlled_origin.paths("/slow/a")) == 2)
    assert httpx.get(f"{b.url}/f/fast", timeout=30).status_code == 429
    a.kill()
    answers: list[int] = []
    seen: list[str] = []

    def b_serves() -> bool:
        answers.append(httpx.get(f"{b.url}/f/fast", timeout=30).status_code)
        seen[:] = [str(answers[-5:])]
        return answers[-1] == 200

    # a's slots are no longer renewed: they expire one lease after a's last renewal at most
    until(b_serves, LEASE_S * 3, "b got a slot back from dead a", seen)
    assert set(answers) <= {429, 200}


# -- cache purges ------------------------------------------------------------------------------------


def test_a_purge_on_one_node_empties_the_others_within_a_second(
    fleet: Fleet, controlled_origin: ControlledOrigin
) -> None:
    controlled_origin.fail = False
    a, b, c = fleet(fetch_config(controlled_origin), n=3)
    host = {"host": "cdn.test"}
    for node in (a, b, c):
        assert httpx.get(f"{node.url}/c/page", headers=host, timeout=10).headers["x-cache"] == "MISS"
        assert httpx.get(f"{node.url}/c/page", headers=host, timeout=10).headers["x-cache"] == "HIT"
        httpx.get(f"{node.url}/c/other", headers=host, timeout=10)
    r = httpx.post(f"{a.admin}/cache/purge", json={"key": "cdn.test/c/page"}, headers=AUTH, timeout=10)
    assert r.json() == {"purged": 1, "told": 2}
    for node in (b, c):
        until(lambda node=node: "cdn.test/c/page" not in node.admin_get("/cache")["keys"], 1.0, "purged")
        assert node.admin_get("/cache")["keys"] == ["cdn.test/c/other"]
        assert httpx.get(f"{node.url}/c/page", headers=host, timeout=10).headers["x-cache"] == "MISS"
    # a prefix purge through the CLI reaches the others too
    run = b.cli("cache", "purge", "--prefix", "cdn.test/")
    assert run.returncode == 0, run.stderr
    until(lambda: a.admin_get("/cache")["keys"] == [], 1.0, "a prefix purge from b reached a")


# -- the registry ------------------------------------------------------------------------------------


def admin(node: Node, method: str, path: str, **kwargs: object) -> httpx.Response:
    r = httpx.request(method, node.admin + path, headers=AUTH, timeout=120, **kwargs)  # type: ignore[arg-type]
    assert r.status_code < 300, r.text
    return r


def test_a_deploy_on_one_node_is_served_by_the_others_within_a_second(
    fleet: Fleet, example_components: dict[str, Path]
) -> None:
    a, b = fleet("", n=2)
    url_id = ""
    seen: list[str] = []

    def served_by_b(component: str, version: str) -> Callable[[], bool]:
        """b answers through the URL with `component`'s code as `version`."""

        def check() -> bool:
            r = httpx.get(f"{b.url}/?n=1&ms=0", headers={"host": f"{url_id}.fn.localhost"}, timeout=10)
            seen[:] = [f"{r.status_code} {r.headers.get('x-edgefn-executed-version')} {r.text[:200]!r}"]
            ran = "stream" if r.headers.get("x-chunks") == "1" else "hello" if '"method"' in r.text else "?"
            return (
                r.status_code == 200
                and ran == component
                and r.headers.get("x-edgefn-executed-version") == version
            )

        return check

    admin(a, "POST", "/functions/greet/code", content=example_components["hello"].read_bytes())
    admin(a, "POST", "/functions/greet/versions")
    admin(a, "PUT", "/functions/greet/aliases/live", json={"version": 1})
    url_id = admin(a, "POST", "/functions/greet/urls", json={"qualifier": "live"}).json()["url_id"]
    until(served_by_b("hello", "1"), 1.0, "b serves version 1 through the URL made on a", seen)

    # version 2 is other code; moving the alias on a moves what b serves
    admin(a, "POST", "/functions/greet/code", content=example_components["stream"].read_bytes())
    admin(a, "POST", "/functions/greet/versions")
    assert served_by_b("hello", "1")()
    admin(a, "PUT", "/functions/greet/aliases/live", json={"version": 2})
    until(served_by_b("stream", "2"), 1.0, "b serves version 2 once the alias moved on a", seen)
    # and back (a roll-back is an alias move too)
    admin(a, "PUT", "/functions/greet/aliases/live", json={"version": 1})
    until(served_by_b("hello", "1"), 1.0, "b serves version 1 again", seen)


def test_a_deploy_on_one_node_is_loaded_by_the_others_before_any_request(
    fleet: Fleet, example_components: dict[str, Path]
) -> None:
    """A node that hears of a deploy on another fetches and loads the new code at once
    (GatewayFleet._warm), so its first request for it waits for neither the fetch nor a compile."""
    a, b = fleet("", n=2)
    code = example_components["hello"].read_bytes()
    loaded = re.compile(rf"(loaded|compiled) \S+ sha256={hashlib.sha256(code).hexdigest()[:12]}")
    admin(a, "POST", "/functions/greet/code", content=code)
    until(
        lambda: loaded.search(b.log()),
        60.0,
        "b loaded the code deployed on a, with no request",
        [b.log()[-2000:]],
    )
    assert "Task exception was never retrieved" not in b.log()
