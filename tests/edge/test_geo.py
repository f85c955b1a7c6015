"""edge.geo against real MaxMind databases written by mmdb-writer."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge.geo import (
    VIEWER_HEADER_FIELDS,
    GeoLocator,
    Viewer,
    haversine_km,
    viewer_from_headers,
    viewer_headers,
)
from tests.edge.conftest import DUBLIN, GERMANY_NO_LOCATION, TOKYO, UNLISTED, WASHINGTON, write_geo_db


def test_city_database_places_addresses(geo_db: Path) -> None:
    geo = GeoLocator(geo_db)
    assert geo.database_type == "GeoIP2-City"
    assert geo.lookup(DUBLIN) == Viewer("IE", "Dublin", 53.3498, -6.2603)
    assert geo.lookup(WASHINGTON) == Viewer("US", "Washington", 38.8951, -77.0364)
    assert geo.lookup(TOKYO) == Viewer("JP", "Tōkyō", 35.6895, 139.6917)
    assert geo.lookup(GERMANY_NO_LOCATION) == Viewer("DE")
    assert geo.lookup(GERMANY_NO_LOCATION).location is None  # type: ignore[union-attr]
    assert geo.lookup(UNLISTED) is None
    assert geo.lookup("not-an-address") is None
    assert geo.lookup("unix:/tmp/sock") is None
    geo.close()


def test_country_database_and_ipv4_only_database(tmp_path: Path) -> None:
    path = write_geo_db(
        tmp_path / "country.mmdb",
        {"198.51.100.0/24": {"country": {"iso_code": "fr"}, "registered_country": {"iso_code": "FR"}}},
        database_type="GeoLite2-Country",
    )
    assert GeoLocator(path).lookup(DUBLIN) == Viewer(country="FR")
    from mmdb_writer import MMDBWriter
    from netaddr import IPSet

    v4 = MMDBWriter(ip_version=4, database_type="GeoIP2-Country")
    v4.insert_network(IPSet(["198.51.100.0/24"]), {"country": {"iso_code": "NL"}})
    v4.to_db_file(str(tmp_path / "v4.mmdb"))
    geo = GeoLocator(tmp_path / "v4.mmdb")
    assert geo.lookup(DUBLIN) == Viewer(country="NL")
    assert geo.lookup("2001:db8::1") is None  # IPv6 against an IPv4 tree: no place, no error


def test_lookups_are_cached_per_address(geo_db: Path) -> None:
    geo = GeoLocator(geo_db, cache_size=2)
    first = geo.lookup(DUBLIN)
    assert geo.lookup(DUBLIN) is first
    geo.lookup(WASHINGTON)
    geo.lookup(TOKYO)
    assert len(geo.cache) == 2 and DUBLIN not in geo.cache  # least recently used went first
    assert geo.lookup(UNLISTED) is None and UNLISTED in geo.cache  # misses are cached too


def test_no_database_places_nobody_but_trusted_cdn_headers_still_count() -> None:
    geo = GeoLocator(None)
    assert geo.lookup(DUBLIN) is None
    assert geo.locate(DUBLIN) is None
    assert geo.locate(DUBLIN, [(b"cf-ipcountry", b"br")]) == Viewer(country="BR")


def test_cdn_headers_win_field_by_field(geo_db: Path) -> None:
    geo = GeoLocator(geo_db)
    # Same country: the CDN's city and location replace the database's.
    told = geo.locate(
        DUBLIN,
        [
            (b"cloudfront-viewer-country", b"IE"),
            (b"cloudfront-viewer-city", b"Cork"),
            (b"cloudfront-viewer-latitude", b"51.8985"),
            (b"cloudfront-viewer-longitude", b"-8.4756"),
        ],
    )
    assert told == Viewer("IE", "Cork", 51.8985, -8.4756)
    # Only a city from the CDN: the database's country and location stay.
    assert geo.locate(DUBLIN, [(b"cf-ipcity", b"Swords")]) == Viewer("IE", "Swords", 53.3498, -6.2603)
    # Another country: the database's city and location are of a different place and are dropped.
    assert geo.locate(DUBLIN, [(b"cf-ipcountry", b"GB")]) == Viewer(country="GB")
    # Unknown/Tor codes and broken numbers are no information.
    assert geo.locate(DUBLIN, [(b"cf-ipcountry", b"XX"), (b"cf-iplatitude", b"north")]) == geo.lookup(DUBLIN)
    assert geo.locate(UNLISTED, [(b"cf-ipcountry", b"T1")]) is None


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ([(b"cf-iplatitude", b"91"), (b"cf-iplongitude", b"0")], None),  # out of range
        ([(b"cf-iplatitude", b"nan"), (b"cf-iplongitude", b"0")], None),
        ([(b"cf-iplatitude", b"10")], None),  # half a location is none
        ([(b"cf-iplatitude", b" -33.86 "), (b"cf-iplongitude", b"151.2")], Viewer(None, None, -33.86, 151.2)),
        ([(b"cf-ipcountry", b"USA")], None),
        ([(b"cf-ipcountry", b"au"), (b"cf-ipcountry", b"NZ")], Viewer("AU")),  # the first one counts
        ([(b"cf-ipcity", b"S%C3%A3o Paulo")], Viewer(city="São Paulo")),
    ],
)
def test_cdn_header_values_are_checked(headers: list[tuple[bytes, bytes]], expected: Viewer | None) -> None:
    assert GeoLocator(None).locate("127.0.0.1", headers) == expected


def test_viewer_headers_round_trip() -> None:
    viewer = Viewer("JP", "Tōkyō", 35.6895, 139.6917)
    headers = viewer_headers(viewer)
    assert headers == [
        (b"x-edgefn-viewer-country", b"JP"),
        (b"x-edgefn-viewer-city", b"T%C5%8Dky%C5%8D"),
        (b"x-edgefn-viewer-latitude", b"35.6895"),
        (b"x-edgefn-viewer-longitude", b"139.6917"),
    ]
    assert viewer_from_headers(headers, VIEWER_HEADER_FIELDS) == viewer
    assert viewer_headers(Viewer(country="DE")) == [(b"x-edgefn-viewer-country", b"DE")]
    assert viewer_headers(None) == []


def test_haversine() -> None:
    dublin, washington, tokyo = (53.35, -6.26), (38.90, -77.04), (35.68, 139.69)
    assert haversine_km(dublin, dublin) == 0
    assert haversine_km(dublin, washington) == pytest.approx(5445, rel=0.01)
    assert haversine_km(washington, tokyo) == pytest.approx(10900, rel=0.01)
    # Across the antimeridian: Fiji to Samoa is ~1,150 km, not most of the globe.
    assert haversine_km((-18.1, 178.4), (-13.8, -171.8)) == pytest.approx(1150, rel=0.05)
