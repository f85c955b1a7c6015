"""Origin selection: nearest to the client, weighted, first-healthy; down endpoints last, never gone."""

from __future__ import annotations

import random
import time
from collections import Counter
from pathlib import Path

import httpx

from edge.geo import Viewer
from edge.origins import OriginPool
from routes.config import Endpoint, Origin
from tests.edge.conftest import DUBLIN, GERMANY_NO_LOCATION, REGION_MAP, REGIONS, TOKYO, UNLISTED, WASHINGTON


def pool(select: str, *endpoints: Endpoint, node_region: str | None = "us-east", seed: int = 1) -> OriginPool:
    origin = Origin(name="web", endpoints=endpoints, select=select)  # type: ignore[arg-type]
    return OriginPool(origin, REGION_MAP, node_region, rng=random.Random(seed))


def hosts(p: OriginPool, viewer: Viewer | None = None) -> list[str]:
    return [e.url.host for e in p.candidates(viewer)]


EU = Endpoint("http://eu.test", region="eu-west")
US = Endpoint("http://us.test", region="us-east")
AP = Endpoint("http://ap.test", region="ap-northeast")
NOWHERE = Endpoint("http://nowhere.test")


def test_nearest_orders_by_distance_from_the_viewer() -> None:
    p = pool("nearest", NOWHERE, US, AP, EU)
    assert hosts(p, Viewer("IE", latitude=53.3, longitude=-6.2)) == [
        "eu.test",
        "us.test",
        "ap.test",
        "nowhere.test",
    ]
    assert hosts(p, Viewer("SG", latitude=1.35, longitude=103.8)) == [
        "ap.test",
        "eu.test",
        "us.test",
        "nowhere.test",
    ]
    assert hosts(p, Viewer("BR", latitude=-23.5, longitude=-46.6)) == [
        "us.test",
        "eu.test",
        "ap.test",
        "nowhere.test",
    ]
    # Unknown place (no viewer, or a country only): distance from the node's own region.
    assert hosts(p) == hosts(p, Viewer("DE")) == ["us.test", "eu.test", "ap.test", "nowhere.test"]
    assert hosts(pool("nearest", NOWHERE, US, AP, EU, node_region="ap-northeast"))[0] == "ap.test"
    # No place and no node region: config order.
    assert hosts(pool("nearest", NOWHERE, US, AP, EU, node_region=None)) == [
        "nowhere.test",
        "us.test",
        "ap.test",
        "eu.test",
    ]


def test_down_endpoints_go_last_but_stay() -> None:
    p = pool("nearest", EU, US, AP)
    dublin = Viewer("IE", latitude=53.3, longitude=-6.2)
    eu, us, ap = p.endpoints
    p.report_connect_failure(eu)
    assert hosts(p, dublin) == ["us.test", "ap.test", "eu.test"]
    ap.healthy = False  # as an active check would leave it
    assert hosts(p, dublin) == ["us.test", "eu.test", "ap.test"]  # ejected before unhealthy
    p.report_connect_failure(us)
    assert hosts(p, dublin) == ["eu.test", "us.test", "ap.test"]  # all down: soonest back first


def test_first_healthy_is_config_order() -> None:
    p = pool("first-healthy", AP, EU, US)
    assert hosts(p, Viewer("IE", latitude=53.3, longitude=-6.2)) == ["ap.test", "eu.test", "us.test"]
    p.endpoints[0].healthy = False
    assert hosts(p) == ["eu.test", "us.test", "ap.test"]


def test_weighted_draws_by_weight_and_keeps_the_rest_as_fallbacks() -> None:
    heavy = Endpoint("http://heavy.test", weight=3)
    light = Endpoint("http://light.test", weight=1)
    zero = Endpoint("http://zero.test", weight=0)
    p = pool("weighted", light, zero, heavy, seed=7)
    firsts = Counter()
    for _ in range(4000):
        order = hosts(p)
        assert sorted(order) == ["heavy.test", "light.test", "zero.test"]
        assert order[-1] == "zero.test"  # weight 0: only a fallback
        firsts[order[0]] += 1
    assert 0.70 < firsts["heavy.test"] / 4000 < 0.80  # 3 of 4 expected
    p.report_connect_failure(p.endpoints[2])  # heavy ejected
    assert {hosts(p)[0] for _ in range(50)} == {"light.test"}


def test_5xx_streak_ejects_and_back_off_grows_to_a_cap() -> None:
    p = pool("first-healthy", EU, US)
    eu = p.endpoints[0]
    for _ in range(OriginPool.FIVEXX_STREAK - 1):
        p.report_response(eu, 503)
    p.report_response(eu, 200)  # the streak is broken
    for _ in range(OriginPool.FIVEXX_STREAK - 1):
        p.report_response(eu, 500)
    assert eu.available(time.monotonic())
    p.report_response(eu, 502)
    assert not eu.available(time.monotonic())
    assert hosts(p) == ["us.test", "eu.test"]
    backoffs = []
    for _ in range(6):
        eu.ejected_until = 0.0  # the back-off ran out, and it failed again at once
        p.report_connect_failure(eu)
        backoffs.append(round(eu.ejected_until - time.monotonic()))
    assert backoffs == [10, 20, 40, 60, 60, 60]
    assert p.describe()["endpoints"][0]["ejections_total"] == 7  # type: ignore[index]


def test_active_checks_apply_thresholds_and_lift_ejections() -> None:
    from routes.config import HealthCheck

    origin = Origin("web", (EU, US), "first-healthy", HealthCheck(healthy_threshold=2, unhealthy_threshold=3))
    p = OriginPool(origin, REGION_MAP, "us-east")
    eu = p.endpoints[0]
    for _ in range(2):
        p.record_check(eu, False, 1.0, "status 503")
    assert eu.healthy
    p.record_check(eu, False, 1.0, "status 503")
    assert not eu.healthy
    p.record_check(eu, True, 1.0, None)
    assert not eu.healthy
    p.record_check(eu, True, 1.0, None)
    assert eu.healthy
    p.report_connect_failure(eu)
    assert not eu.available(time.monotonic())
    p.record_check(eu, True, 1.0, None)
    assert eu.available(time.monotonic())


NEAREST = """
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

[[routes]]
name = "web"
path = "/{*rest}"
origin = "web"
"""


def start_nearest(edge_gateway, origins, geo_db: Path):
    eu, us, ap = origins("eu", "us", "ap")
    config = NEAREST % {"db": geo_db, "regions": REGIONS, "eu": eu.url, "us": us.url, "ap": ap.url}
    return edge_gateway(config), (eu, us, ap)


def served_by(url: str, client: str | None, **headers: str) -> str:
    if client is not None:
        headers["x-forwarded-for"] = client
    r = httpx.get(f"{url}/echo/", headers=headers)
    assert r.status_code == 200, r.text
    return r.headers["x-origin"]


def test_each_client_goes_to_its_nearest_origin(edge_gateway, origins, geo_db: Path) -> None:
    gw, _ = start_nearest(edge_gateway, origins, geo_db)
    assert served_by(gw.url, DUBLIN) == "eu"
    assert served_by(gw.url, WASHINGTON) == "us"
    assert served_by(gw.url, TOKYO) == "ap"
    # No location known: the node's own region (us-east).
    assert served_by(gw.url, GERMANY_NO_LOCATION) == "us"
    assert served_by(gw.url, UNLISTED) == "us"
    assert served_by(gw.url, None) == "us"
    # A trusted CDN's coordinates: Singapore is nearest to Tokyo, Paris to Dublin.
    assert served_by(gw.url, WASHINGTON, **{"cf-iplatitude": "1.35", "cf-iplongitude": "103.82"}) == "ap"
    assert (
        served_by(
            gw.url, None, **{"cloudfront-viewer-latitude": "48.86", "cloudfront-viewer-longitude": "2.35"}
        )
        == "eu"
    )
    # A client cannot steer itself by sending the gateway's own headers.
    assert (
        served_by(
            gw.url, WASHINGTON, **{"x-edgefn-viewer-latitude": "35.7", "x-edgefn-viewer-longitude": "139.7"}
        )
        == "us"
    )
