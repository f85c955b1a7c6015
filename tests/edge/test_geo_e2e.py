"""Client geography through a real gateway: what origins see, and who may say where a client is."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.edge.conftest import DUBLIN, GERMANY_NO_LOCATION, REGIONS, TOKYO, UNLISTED

CONFIG = """
[node]
name = "edge-test"
region = "eu-west"
data_dir = "{data_dir}"
trusted_proxies = [%(trusted)s]
geoip_db = "%(db)s"
%(regions)s
[origins.web]
endpoints = [{ url = "%(origin)s" }]

[[routes]]
name = "web"
path = "/{*rest}"
origin = "web"
"""

FORGED = {
    "x-edgefn-viewer-country": "AQ",
    "x-edgefn-viewer-city": "McMurdo",
    "x-edgefn-viewer-latitude": "-77.85",
    "x-edgefn-viewer-longitude": "166.67",
    "x-edgefn-node": "evil",
    "x-edgefn-region": "nowhere",
}


def seen(url: str, headers: dict[str, str]) -> dict[str, list[str]]:
    r = httpx.get(f"{url}/echo/geo", headers=headers)
    assert r.status_code == 200, r.text
    out: dict[str, list[str]] = {}
    for k, v in r.json()["headers"]:
        out.setdefault(k, []).append(v)
    return out


def start(edge_gateway, origins, geo_db: Path, trusted: str) -> str:
    (origin,) = origins("web")
    config = CONFIG % {"trusted": trusted, "db": geo_db, "regions": REGIONS, "origin": origin.url}
    return edge_gateway(config).url


def test_origin_sees_viewer_from_the_database_and_forged_headers_are_replaced(
    edge_gateway, origins, geo_db: Path
) -> None:
    url = start(edge_gateway, origins, geo_db, '"127.0.0.1/32"')
    h = seen(url, {"x-forwarded-for": TOKYO, **FORGED})
    assert h["x-edgefn-viewer-country"] == ["JP"]
    assert h["x-edgefn-viewer-city"] == ["T%C5%8Dky%C5%8D"]
    assert h["x-edgefn-viewer-latitude"] == ["35.6895"]
    assert h["x-edgefn-viewer-longitude"] == ["139.6917"]
    assert h["x-edgefn-node"] == ["edge-test"]
    assert h["x-edgefn-region"] == ["eu-west"]

    # Only what is known is sent: a country without a place, then nothing at all.
    h = seen(url, {"x-forwarded-for": GERMANY_NO_LOCATION, **FORGED})
    assert h["x-edgefn-viewer-country"] == ["DE"]
    assert not {"x-edgefn-viewer-city", "x-edgefn-viewer-latitude", "x-edgefn-viewer-longitude"} & h.keys()
    h = seen(url, {"x-forwarded-for": UNLISTED, **FORGED})
    assert not [k for k in h if k.startswith("x-edgefn-viewer-")]
    assert h["x-edgefn-node"] == ["edge-test"]


def test_trusted_cdn_headers_win_over_the_database(edge_gateway, origins, geo_db: Path) -> None:
    url = start(edge_gateway, origins, geo_db, '"127.0.0.1/32"')
    h = seen(
        url,
        {
            "x-forwarded-for": DUBLIN,
            "cloudfront-viewer-country": "FR",
            "cloudfront-viewer-latitude": "48.8566",
            "cloudfront-viewer-longitude": "2.3522",
        },
    )
    assert h["x-edgefn-viewer-country"] == ["FR"]
    assert h["x-edgefn-viewer-latitude"] == ["48.8566"]
    assert "x-edgefn-viewer-city" not in h  # Dublin is the database's answer for another country
    assert h["cloudfront-viewer-country"] == ["FR"]  # a trusted CDN's own headers pass on


def test_an_untrusted_peer_cannot_place_itself(edge_gateway, origins, geo_db: Path) -> None:
    # The test client (127.0.0.1) is not a trusted proxy here: X-Forwarded-For and CDN headers
    # from it are ignored, and 127.0.0.1 itself is nowhere in the database.
    url = start(edge_gateway, origins, geo_db, '"10.0.0.0/8"')
    h = seen(
        url,
        {
            "x-forwarded-for": TOKYO,
            "cloudfront-viewer-country": "FR",
            "cloudfront-viewer-latitude": "48.8566",
            "cloudfront-viewer-longitude": "2.3522",
            "cf-ipcountry": "FR",
            **FORGED,
        },
    )
    assert not [k for k in h if k.startswith("x-edgefn-viewer-")]
    assert not [k for k in h if k.startswith(("cloudfront-viewer-", "cf-ip"))]
    assert h["x-edgefn-node"] == ["edge-test"]
    assert h["x-edgefn-region"] == ["eu-west"]
    assert h["x-forwarded-for"] == ["127.0.0.1"]
