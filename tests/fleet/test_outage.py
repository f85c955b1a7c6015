"""What a fleet node does while its Redis is away, and after it comes back (empty: the test's
Redis keeps nothing, as an unpersisted Redis after a crash)."""

from __future__ import annotations

import time

import httpx

from tests.fleet.conftest import TOKEN, ControlledOrigin, Fleet, RedisServer

AUTH = {"authorization": f"Bearer {TOKEN}"}
EVENT = {"x-edgefn-invocation-type": "Event"}

CONFIG = """
[origins.web]
endpoints = [{{ url = "{origin}" }}]

[functions.hello]
component = "{{hello}}"

[functions.fetch]
component = "{{fetch}}"
outbound = ["web"]

[[routes]]
name = "hello"
path = "/hello"
function = "hello"

[[routes]]
name = "fetch"
path = "/f/{{*rest}}"
function = "fetch"
rewrite = {{ path = "/{{rest}}" }}

[[routes]]
name = "origin"
path = "/o/{{*rest}}"
origin = "web"
cache = {{ ttl_s = 600 }}
"""


def test_a_node_without_its_redis_serves_what_it_can_and_says_what_it_cannot(
    fleet: Fleet, redis_server: RedisServer, controlled_origin: ControlledOrigin
) -> None:
    controlled_origin.fail = False
    [node] = fleet(CONFIG.format(origin=controlled_origin.url), n=1)
    assert httpx.get(f"{node.url}/hello", timeout=30).status_code == 200
    assert httpx.get(f"{node.url}/o/page", timeout=10).headers["x-cache"] == "MISS"

    redis_server.stop()
    # origins, the cache and functions already resolved need no Redis
    assert httpx.get(f"{node.url}/o/page", timeout=10).headers["x-cache"] == "HIT"
    assert httpx.get(f"{node.url}/o/new", timeout=10).status_code == 200
    assert httpx.get(f"{node.url}/hello", timeout=30).status_code == 200
    # an Event cannot be made durable: refused, with the reason and when to retry
    r = httpx.post(f"{node.url}/f/ev", headers=EVENT, timeout=30)
    assert r.status_code == 503 and r.headers["retry-after"], r.text
    assert r.json()["error"]["code"] == "control_plane_unavailable"
    assert "127.0.0.1" not in r.text  # the client is not told where Redis lives
    # a purge is done here but cannot reach the other nodes: said so
    r = httpx.post(f"{node.admin}/cache/purge", json={"prefix": ""}, headers=AUTH, timeout=30)
    assert r.status_code == 503 and "purged 2 here" in r.json()["error"]["message"]

    # the queue's worker says why it pauses (once per pass, backing off)
    deadline = time.monotonic() + 20
    while '"event": "queue-unavailable"' not in node.log():
        assert time.monotonic() < deadline, node.log()[-2000:]
        time.sleep(0.1)

    redis_server.start()
    deadline = time.monotonic() + 30
    while (r := httpx.post(f"{node.url}/f/ev", headers=EVENT, timeout=30)).status_code != 202:
        assert time.monotonic() < deadline, r.text
        time.sleep(0.2)
    controlled_origin.wait_for(lambda: "/ev" in controlled_origin.paths(), timeout=40)
    # Redis came back empty: the queue's group was made again, the notices subscribed again
    deadline = time.monotonic() + 20  # the subscriber retries with a growing pause (at most 5 s)
    while not all(f'"event": "{e}"' in node.log() for e in ("queue-group-recreated", "notices-resubscribed")):
        assert time.monotonic() < deadline, node.log()[-2000:]
        time.sleep(0.1)
