"""Health and failover through a real gateway: active checks take an origin out and bring it back,
a dead nearest origin is passed over within the same request, 5xx streaks eject, 502 only when
nothing connects, and the admin API shows the pool's state."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from gateway.admin.app import admin_app
from tests.edge.conftest import DUBLIN, REGIONS, TOKYO, WASHINGTON
from tests.servers import ServerThread

CONFIG = """
[node]
name = "edge-us"
region = "us-east"
data_dir = "{data_dir}"
trusted_proxies = ["127.0.0.1/32"]
geoip_db = "%(db)s"
%(regions)s
[origins.web]
endpoints = [
  { url = "%(eu)s", region = "eu-west" },
  { url = "%(us)s", region = "us-east" },
  { url = "%(ap)s", region = "ap-northeast" },
]
select = "nearest"
timeouts = { connect_s = 1, read_s = 5 }
%(health)s

[[routes]]
name = "web"
path = "/{*rest}"
origin = "web"
"""
FAST_HEALTH = 'health = { path = "/healthz", interval_s = 0.2, timeout_s = 0.2, healthy_threshold = 2, unhealthy_threshold = 2 }'


def start(edge_gateway, origins, geo_db: Path, health: str = ""):
    eu, us, ap = origins("eu", "us", "ap")
    config = CONFIG % {
        "db": geo_db,
        "regions": REGIONS,
        "eu": eu.url,
        "us": us.url,
        "ap": ap.url,
        "health": health,
    }
    return edge_gateway(config), (eu, us, ap)


def get(url: str, client: str, method: str = "GET") -> httpx.Response:
    return httpx.request(method, f"{url}/echo/", headers={"x-forwarded-for": client}, timeout=10)


def eventually(check: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"not true within {timeout} s")
        time.sleep(0.05)


def endpoint_state(gw, host_url: str) -> dict:
    return next(e for e in gw.pool("web")["endpoints"] if e["url"].rstrip("/") == host_url)


def test_failed_health_check_moves_traffic_and_recovery_brings_it_back(edge_gateway, origins, geo_db) -> None:
    gw, (eu, _us, _ap) = start(edge_gateway, origins, geo_db, FAST_HEALTH)
    assert get(gw.url, DUBLIN).headers["x-origin"] == "eu"
    eventually(lambda: eu.app.probes >= 2 and endpoint_state(gw, eu.url)["last_check_ok"] is True)

    eu.app.healthy = False  # still serves requests, but its health path says 503
    eventually(lambda: not endpoint_state(gw, eu.url)["healthy"])
    state = endpoint_state(gw, eu.url)
    assert state["available"] is False
    assert state["last_error"] == "status 503"
    assert state["last_latency_ms"] is not None
    hits = eu.app.hits
    for _ in range(5):
        assert get(gw.url, DUBLIN).headers["x-origin"] == "us"  # next nearest to Dublin
    assert get(gw.url, TOKYO).headers["x-origin"] == "ap"  # others unaffected
    assert eu.app.hits == hits

    eu.app.healthy = True
    eventually(lambda: endpoint_state(gw, eu.url)["healthy"])
    assert get(gw.url, DUBLIN).headers["x-origin"] == "eu"


def test_refused_and_slow_probes_count_as_failures(edge_gateway, origins, geo_db) -> None:
    gw, (eu, _us, ap) = start(edge_gateway, origins, geo_db, FAST_HEALTH)
    eu.stop()  # connection refused on every probe
    ap.app.health_delay_s = 1.0  # answers, but after timeout_s
    eventually(lambda: not endpoint_state(gw, eu.url)["healthy"])
    eventually(lambda: not endpoint_state(gw, ap.url)["healthy"])
    assert "ConnectError" in endpoint_state(gw, eu.url)["last_error"]
    assert "Timeout" in endpoint_state(gw, ap.url)["last_error"]
    assert get(gw.url, DUBLIN).headers["x-origin"] == "us"
    assert get(gw.url, TOKYO).headers["x-origin"] == "us"


def test_passive_failover_when_the_nearest_origin_dies(edge_gateway, origins, geo_db) -> None:
    gw, (eu, us, _ap) = start(edge_gateway, origins, geo_db)  # no active checks
    assert get(gw.url, DUBLIN).headers["x-origin"] == "eu"
    eu.stop()
    r = get(gw.url, DUBLIN)
    assert r.status_code == 200
    assert r.headers["x-origin"] == "us"  # the same request went on to the next nearest
    state = endpoint_state(gw, eu.url)
    assert state["ejected"] is True and state["failures"] == 1 and state["ejections"] == 1
    assert 0 < state["ejected_for_s"] <= 5
    us_hits = us.app.hits
    for _ in range(3):
        assert get(gw.url, DUBLIN).headers["x-origin"] == "us"
    assert us.app.hits == us_hits + 3
    assert endpoint_state(gw, eu.url)["failures"] == 1  # ejected: not tried again meanwhile


def test_non_idempotent_requests_are_not_retried(edge_gateway, origins, geo_db) -> None:
    gw, (eu, us, _ap) = start(edge_gateway, origins, geo_db)
    eu.stop()
    r = get(gw.url, DUBLIN, method="POST")
    assert r.status_code == 502
    assert r.json()["error"]["code"] == "origin_unreachable"
    assert us.app.hits == 0
    # The failure ejected the dead endpoint, so the next POST goes to a live one.
    assert get(gw.url, DUBLIN, method="POST").headers["x-origin"] == "us"


def test_502_only_when_no_endpoint_connects(edge_gateway, origins, geo_db) -> None:
    gw, (eu, us, ap) = start(edge_gateway, origins, geo_db)
    eu.stop()
    ap.stop()
    # Both down ones are ejected; the one left still answers everyone.
    assert get(gw.url, DUBLIN).headers["x-origin"] == "us"
    assert get(gw.url, TOKYO).headers["x-origin"] == "us"
    us.stop()
    r = get(gw.url, WASHINGTON)
    assert r.status_code == 502
    assert r.json()["error"]["code"] == "origin_unreachable"
    states = gw.pool("web")["endpoints"]
    assert all(s["ejected"] for s in states)


def test_a_streak_of_5xx_ejects_the_endpoint(edge_gateway, origins, geo_db) -> None:
    gw, (eu, _us, _ap) = start(edge_gateway, origins, geo_db)
    eu.app.failing = True
    for _ in range(5):
        r = get(gw.url, DUBLIN)
        assert (r.status_code, r.headers["x-origin"]) == (500, "eu")  # an answer is passed on
    r = get(gw.url, DUBLIN)
    assert (r.status_code, r.headers["x-origin"]) == (200, "us")
    assert endpoint_state(gw, eu.url)["ejected"] is True


def test_admin_api_shows_pool_state(edge_gateway, origins, geo_db, monkeypatch) -> None:
    monkeypatch.setenv("EDGEFN_ADMIN_TOKEN", "t0ken")
    gw, (eu, _us, _ap) = start(edge_gateway, origins, geo_db, FAST_HEALTH)
    eu.stop()
    eventually(lambda: not endpoint_state(gw, eu.url)["healthy"])
    with ServerThread(admin_app(gw.gateway), lifespan="off") as admin:
        r = httpx.get(f"{admin.url}/origins", headers={"authorization": "Bearer t0ken"})
    assert r.status_code == 200
    (web,) = r.json()
    assert web["name"] == "web" and web["select"] == "nearest"
    assert web["health"]["interval_s"] == 0.2
    by_region = {e["region"]: e for e in web["endpoints"]}
    assert by_region["eu-west"]["healthy"] is False
    assert by_region["eu-west"]["available"] is False
    assert by_region["us-east"]["healthy"] is True
    assert isinstance(by_region["us-east"]["last_check"], float)
    assert by_region["us-east"]["last_check_ok"] is True
