"""A fleet whose nodes run `serve --workers 2`: everything a fleet promises holds per process.

Two nodes x 2 workers on one real redis-server. Which process answered a public request is the
first 16 hex digits of its `x-request-id` (a per-process prefix, gateway/request_ids.py); which
answered an admin request is `self` in `GET /fleet`. Requests go on fresh connections, so the
kernel hands them to whichever worker accepts first, and a check "on every worker" polls until
each of the node's processes has answered.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import redis

from tests.fleet.conftest import LEASE_S, ControlledOrigin, Fleet, Node, RedisServer
from tests.fleet.test_fleet_e2e import AUTH, EVENT, admin, concurrently, fetch_config, state_of, until
from tests.registry.conftest import AdminNode, admin_node  # noqa: F401 (a fixture)

WORKERS = 2
CDN = {"host": "cdn.test"}
# How long polls on fresh connections may take to hear a MISS from every worker after a purge:
# far below the entries' ttl (600 s), so a MISS can only come from the purge. Which worker accepts
# a connection is the kernel's choice; with 1 s a run now and then heard from only one.
PURGE_REACH_S = 10.0
POLL_WIDTH = 4  # requests at once in each poll of `on_every_worker`


def process(r: httpx.Response) -> str:
    """The process that answered: the per-process prefix of its request id."""
    return r.headers["x-request-id"][:16]


def workers_of(
    node: Node, path: str = "/nothing-here", headers: dict[str, str] = CDN, within_s: float = 30.0
) -> set[str]:
    """Both worker processes of `node`, found by asking on fresh connections until two have
    answered. Bounded in time, not in requests: the second worker may still be starting (on a
    loaded CI machine, 400 quick requests were over before it was)."""
    seen: set[str] = set()
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        seen.add(process(httpx.get(node.url + path, headers=headers, timeout=10)))
        if len(seen) == WORKERS:
            return seen
    raise AssertionError(f"requests on fresh connections for {within_s} s reached only {len(seen)} worker(s)")


def on_every_worker(
    node: Node,
    workers: set[str],
    check: Callable[[httpx.Response], bool],
    path: str,
    *,
    once: bool = False,
    seen: list[str] | None = None,
    **kw: object,
) -> Callable[[], bool]:
    """A poll: true once the latest answer of each of `workers` passed `check` (with `once`:
    once each has passed it, for a state the passing answer itself ends, as a MISS refills).
    `seen` is kept up to date with each worker's standing, for the failure message."""
    seen = [] if seen is None else seen
    passed: dict[str, bool] = {}

    def ask(_: int) -> httpx.Response:
        return httpx.get(node.url + path, timeout=10, **kw)  # type: ignore[arg-type]

    def poll() -> bool:
        # A few at once, each on a fresh connection: asked one at a time, the kernel now and then
        # gave every connection to the same worker for over a second.
        with ThreadPoolExecutor(POLL_WIDTH) as pool:
            answers = list(pool.map(ask, range(POLL_WIDTH)))
        for r in answers:
            assert process(r) in workers, "an answer from a process that is not one of the node's workers"
            passed[process(r)] = (once and passed.get(process(r), False)) or check(r)
        seen[:] = [f"{w}: {'passed' if ok else 'not yet'}" for w, ok in passed.items()]
        return passed.keys() == workers and all(passed.values())

    return poll


def members(node: Node) -> dict:
    return node.admin_get("/fleet")


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # a zombie until the node process reaps it: gone for our purpose
    return Path(f"/proc/{pid}/stat").read_text().split(") ")[1].startswith("Z")


# -- membership ------------------------------------------------------------------------------------


def test_each_worker_is_a_member_and_a_sigterm_of_the_node_removes_all_of_them(
    fleet: Fleet, redis_client: redis.Redis, controlled_origin: ControlledOrigin
) -> None:
    controlled_origin.fail = False
    a, b = fleet(fetch_config(controlled_origin), n=2, workers=WORKERS)
    view = members(b)
    assert view["nodes"] == {"node-0": WORKERS, "node-1": WORKERS}, view
    mine = [m for m in view["members"] if m["node"] == "node-0"]
    assert len({m["pid"] for m in mine}) == WORKERS and all(0 < m["expires_in_s"] <= LEASE_S for m in mine)
    answered = {members(a)["self"] for _ in range(200)}  # the admin listener is shared too
    assert answered == {m["id"] for m in mine}, (answered, mine)

    def consumers() -> set[str]:
        return {c["name"].decode() for c in redis_client.xinfo_consumers("edgefn:q:stream", "workers")}

    # a process is a consumer of the queue once it has read an entry: events until one of a's has
    for i in range(200):
        if any(name.startswith("node-0/") for name in consumers()):
            break
        assert httpx.post(f"{a.url}/f/ev/{i}", headers=EVENT, timeout=10).status_code == 202
        time.sleep(0.1)
    assert consumers() - {m["id"] for m in view["members"]} == set()  # consumers are members

    a.stop()  # SIGTERM: each worker leaves before it exits, so no lease has to run out
    view = members(b)
    assert view["nodes"] == {"node-1": WORKERS}, view
    assert all(gone(m["pid"]) for m in mine)
    assert not any(name.startswith("node-0/") for name in consumers())  # they left the queue's group


def test_fleet_answers_404_without_a_fleet_and_503_without_redis(
    fleet: Fleet,
    redis_server: RedisServer,
    admin_node: Callable[[str], AdminNode],  # noqa: F811 (the fixture imported above)
) -> None:
    alone = admin_node("")
    r = alone.call("GET", "/fleet")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_in_a_fleet", r.text
    assert alone.call("GET", "/fleet", token=None).status_code == 401
    [a] = fleet("", n=1)
    redis_server.stop()
    r = httpx.get(f"{a.admin}/fleet", headers=AUTH, timeout=30)
    assert r.status_code == 503 and r.json()["error"]["code"] == "control_plane_unavailable", r.text


def test_a_node_process_killed_takes_its_workers_with_it(fleet: Fleet) -> None:
    a, b = fleet("", n=2, workers=WORKERS)
    pids = [m["pid"] for m in members(b)["members"] if m["node"] == "node-0"]
    a.kill()  # SIGKILL of the node process: its workers must not go on serving on their own
    until(lambda: all(gone(pid) for pid in pids), 60, "the workers of a killed node stop")
    until(lambda: members(b)["nodes"] == {"node-1": WORKERS}, LEASE_S * 3, "they left the fleet")


# -- cache purges ----------------------------------------------------------------------------------


def test_a_purge_empties_the_cache_of_every_worker_of_every_node(
    fleet: Fleet, controlled_origin: ControlledOrigin
) -> None:
    controlled_origin.fail = False
    nodes = fleet(fetch_config(controlled_origin), n=2, workers=WORKERS)
    workers = {node.port: workers_of(node) for node in nodes}
    hit = lambda r: r.headers["x-cache"] == "HIT"  # noqa: E731
    miss = lambda r: r.headers["x-cache"] == "MISS"  # noqa: E731
    for node in nodes:  # the cache is per process: each worker fills its own
        until(on_every_worker(node, workers[node.port], hit, "/c/page", headers=CDN), 60, "cached everywhere")

    r = httpx.post(f"{nodes[0].admin}/cache/purge", json={"key": "cdn.test/c/page"}, headers=AUTH, timeout=10)
    assert r.json() == {"purged": 1, "told": 2 * WORKERS - 1}, r.text  # every other process heard it
    for node in nodes:
        seen: list[str] = []
        purged = on_every_worker(node, workers[node.port], miss, "/c/page", once=True, seen=seen, headers=CDN)
        until(purged, PURGE_REACH_S, "every worker of the node answers a MISS", seen)


# -- the registry ----------------------------------------------------------------------------------


def test_a_deploy_and_alias_moves_on_a_reach_every_worker_of_b_within_a_second(
    fleet: Fleet, example_components: dict[str, Path]
) -> None:
    a, b = fleet("", n=2, workers=WORKERS)
    b_workers = workers_of(b)
    url_id = ""
    seen: list[str] = []

    def runs(component: str, version: str) -> Callable[[], bool]:
        def check(r: httpx.Response) -> bool:
            ran = "stream" if r.headers.get("x-chunks") == "1" else "hello" if '"method"' in r.text else "?"
            return (
                r.status_code == 200
                and ran == component
                and r.headers.get("x-edgefn-executed-version") == version
            )

        host = {"host": f"{url_id}.fn.localhost"}
        return on_every_worker(b, b_workers, check, "/?n=1&ms=0", seen=seen, headers=host)

    admin(a, "POST", "/functions/greet/code", content=example_components["hello"].read_bytes())
    admin(a, "POST", "/functions/greet/versions")
    admin(a, "PUT", "/functions/greet/aliases/live", json={"version": 1})
    url_id = admin(a, "POST", "/functions/greet/urls", json={"qualifier": "live"}).json()["url_id"]
    until(runs("hello", "1"), 1.0, "every worker of b serves version 1 through the URL made on a", seen)

    admin(a, "POST", "/functions/greet/code", content=example_components["stream"].read_bytes())
    admin(a, "POST", "/functions/greet/versions")
    admin(a, "PUT", "/functions/greet/aliases/live", json={"version": 2})
    until(runs("stream", "2"), 1.0, "every worker of b serves version 2 once the alias moved on a", seen)
    admin(a, "PUT", "/functions/greet/aliases/live", json={"version": 1})
    until(runs("hello", "1"), 1.0, "every worker of b serves version 1 again", seen)


# -- reserved concurrency --------------------------------------------------------------------------


def test_reserved_concurrency_holds_across_every_worker_of_every_node(
    fleet: Fleet, controlled_origin: ControlledOrigin, redis_client: redis.Redis
) -> None:
    controlled_origin.delay_s = LEASE_S * 3  # held over three leases: renewals must not drop a slot
    a, b = fleet(fetch_config(controlled_origin, reserved=2), n=2, workers=WORKERS)
    first = concurrently([f"{n.url}/f/slow/{i}" for i, n in enumerate((a, b) * 4)])
    statuses = sorted(r.status_code for r in first)
    assert statuses == [200, 200] + [429] * 6, [(r.status_code, r.text[:200]) for r in first]
    assert len({process(r) for r in first}) >= 3, "the requests reached fewer than 3 of the 4 workers"

    # two slow requests held, however the workers took them; every request meanwhile is refused
    later: list[httpx.Response] = []
    holders = [threading.Thread(target=lambda n=n: later.append(httpx.get(f"{n.url}/f/slow/h", timeout=60)))
               for n in (a, a)]  # fmt: skip
    for t in holders:
        t.start()
    controlled_origin.wait_for(lambda: len(controlled_origin.paths("/slow/h")) == 2)
    owners = {slot.decode().split("/")[2] for slot in redis_client.zrange("edgefn:slots:fetch", 0, -1)}
    refused = []
    deadline = time.monotonic() + LEASE_S * 2
    while time.monotonic() < deadline:
        refused.append(httpx.get(f"{(a, b)[len(refused) % 2].url}/f/fast", timeout=30).status_code)
    for t in holders:
        t.join(timeout=90)
    assert sorted(r.status_code for r in later) == [200, 200], [r.text[:200] for r in later]
    assert set(refused) == {429}, refused
    assert owners and len(owners) <= 2, owners  # held by one or two worker processes of node a


# -- the Event queue -------------------------------------------------------------------------------


def test_events_accepted_by_any_worker_run_exactly_once(
    fleet: Fleet, controlled_origin: ControlledOrigin
) -> None:
    controlled_origin.fail = False
    a, b = fleet(fetch_config(controlled_origin), n=2, workers=WORKERS)
    accepted: dict[str, str] = {}
    for i in range(24):
        r = httpx.post(f"{(a, b)[i % 2].url}/f/ev/{i}", headers=EVENT, timeout=10)
        assert r.status_code == 202, r.text
        accepted[r.json()["invocation_id"]] = process(r)
    assert len(set(accepted.values())) >= 3, "the events reached fewer than 3 of the 4 workers"
    for invocation_id in accepted:
        until(lambda i=invocation_id: state_of(b, i)["state"] == "succeeded", 60, f"{invocation_id} ran")
        assert state_of(a, invocation_id)["attempts"] == 1
    assert sorted(controlled_origin.paths("/ev/")) == sorted(f"/ev/{i}" for i in range(24))


def test_an_event_survives_the_worker_running_it_being_killed(
    fleet: Fleet, controlled_origin: ControlledOrigin, redis_client: redis.Redis
) -> None:
    controlled_origin.delay_s = 3.0
    a, b = fleet(fetch_config(controlled_origin), n=2, workers=WORKERS)
    r = httpx.post(f"{a.url}/f/slow/k", headers=EVENT, timeout=10)
    assert r.status_code == 202, r.text
    invocation_id = r.json()["invocation_id"]
    controlled_origin.wait_for(lambda: "/slow/k" in controlled_origin.paths())
    owner = redis_client.hget(f"edgefn:q:ev:{invocation_id}", "owner").decode()
    pid = int(owner.split("/")[2])
    os.kill(pid, 9)  # SIGKILL of the one worker running it; its node and the others live on
    killed_at = time.time()
    until(lambda: state_of(b, invocation_id)["state"] == "succeeded", 60, "the event ran elsewhere")
    state = state_of(a, invocation_id)
    assert state["attempts"] == 1 and state["last_status"] == 200  # a cut-short run is no attempt
    assert any(h.path == "/slow/k" and h.at > killed_at for h in controlled_origin.hits)
    # the dead worker leaves the fleet, and node a starts another in its place
    node_a = lambda: [m for m in members(b)["members"] if m["node"] == "node-0"]  # noqa: E731
    until(lambda: owner not in {m["id"] for m in node_a()} and len(node_a()) == WORKERS, 180, "replaced")
    assert f"worker {pid} was killed (signal 9); starting another" in a.log()
