"""Where the client is: a MaxMind database and a CDN's geo headers, turned into a `Viewer`.

Two sources, in this order of trust:

1. geo headers a CDN in front of the node sent (CloudFront's `cloudfront-viewer-*`, Cloudflare's
   `cf-ipcountry`, `cf-iplatitude`, ...). The CDN saw the real client, so its answer wins, field by
   field, over the database; but anyone can send these headers, so the gateway passes them here only
   when the socket peer is a trusted proxy.
2. the node's `geoip_db` (MaxMind City or Country format), read through `maxminddb` with
   `MODE_AUTO` (the C extension and mmap when available), for the client address that
   `TrustedProxies.client_address` settled on.

The result reaches functions and origins as `x-edgefn-viewer-*` request headers (`viewer_headers`)
and origin selection as `Viewer.location`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote

from cachetools import LRUCache

if TYPE_CHECKING:
    import maxminddb  # imported by GeoLocator when the node has a geoip_db

RawHeaders = list[tuple[bytes, bytes]]

# CDN header -> Viewer field. Lower-case, as ASGI servers hand header names over.
CDN_GEO_HEADERS: Mapping[bytes, str] = {
    b"cloudfront-viewer-country": "country",
    b"cloudfront-viewer-city": "city",
    b"cloudfront-viewer-latitude": "latitude",
    b"cloudfront-viewer-longitude": "longitude",
    b"cf-ipcountry": "country",
    b"cf-ipcity": "city",
    b"cf-iplatitude": "latitude",
    b"cf-iplongitude": "longitude",
}
VIEWER_HEADERS = (
    b"x-edgefn-viewer-country",
    b"x-edgefn-viewer-city",
    b"x-edgefn-viewer-latitude",
    b"x-edgefn-viewer-longitude",
)
# x-edgefn-viewer-* header -> Viewer field, to read back a viewer that only travelled as headers.
VIEWER_HEADER_FIELDS: Mapping[bytes, str] = dict(
    zip(VIEWER_HEADERS, ("country", "city", "latitude", "longitude"), strict=True)
)
# Cloudflare's codes for "unknown" and "Tor": not a place.
_NOT_COUNTRIES = frozenset({"XX", "T1"})
EARTH_RADIUS_KM = 6371.0088


@dataclass(frozen=True, slots=True)
class Viewer:
    """The client's place as far as it is known; any field may be missing."""

    country: str | None = None  # ISO 3166-1 alpha-2, upper case
    city: str | None = None  # English name
    latitude: float | None = None
    longitude: float | None = None

    @property
    def location(self) -> tuple[float, float] | None:
        if self.latitude is None or self.longitude is None:
            return None
        return (self.latitude, self.longitude)

    def is_empty(self) -> bool:
        return self.country is None and self.city is None and self.location is None


def haversine_km(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Great-circle distance between two (latitude, longitude) points in degrees."""
    lat1, lon1 = math.radians(a[0]), math.radians(a[1])
    lat2, lon2 = math.radians(b[0]), math.radians(b[1])
    h = math.sin((lat2 - lat1) / 2) ** 2 + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(h)))


def viewer_headers(viewer: Viewer | None) -> RawHeaders:
    """The `x-edgefn-viewer-*` headers for a viewer; unknown fields are left out.

    City names are UTF-8, percent-encoded (spaces and ASCII punctuation kept), because header
    values are bytes that many stacks read as Latin-1.
    """
    if viewer is None:
        return []
    out: RawHeaders = []
    if viewer.country:
        out.append((VIEWER_HEADERS[0], viewer.country.encode("ascii")))
    if viewer.city:
        out.append((VIEWER_HEADERS[1], quote(viewer.city, safe=" -'.,()/").encode("ascii")))
    if viewer.location is not None:
        out.append((VIEWER_HEADERS[2], _coordinate(viewer.latitude)))
        out.append((VIEWER_HEADERS[3], _coordinate(viewer.longitude)))
    return out


def viewer_from_headers(headers: Iterable[tuple[bytes, bytes]], names: Mapping[bytes, str]) -> Viewer | None:
    """A viewer from headers named in `names` (header -> field); invalid values are ignored."""
    fields: dict[str, Any] = {}
    for name, value in headers:
        field = names.get(name)
        if field is None or field in fields:
            continue
        parsed = _parse_field(field, value)
        if parsed is not None:
            fields[field] = parsed
    viewer = Viewer(**fields)
    if (viewer.latitude is None) != (viewer.longitude is None):
        viewer = replace(viewer, latitude=None, longitude=None)
    return None if viewer.is_empty() else viewer


def _coordinate(value: float | None) -> bytes:
    return f"{value:.4f}".rstrip("0").rstrip(".").encode()


def _parse_field(field: str, raw: bytes) -> str | float | None:
    text = raw.decode("latin-1").strip()
    if not text:
        return None
    if field == "country":
        code = text.upper()
        return code if len(code) == 2 and code.isalpha() and code not in _NOT_COUNTRIES else None
    if field == "city":
        return unquote(text)[:100]
    try:
        number = float(text)
    except ValueError:
        return None
    limit = 90.0 if field == "latitude" else 180.0
    return number if math.isfinite(number) and -limit <= number <= limit else None


def _viewer_from_record(record: Any) -> Viewer | None:
    """A City or Country record (GeoIP2/GeoLite2 layout) as a Viewer; other shapes give None."""
    if not isinstance(record, dict):
        return None
    country = record.get("country") or record.get("registered_country") or {}
    city = record.get("city") or {}
    location = record.get("location") or {}
    code = country.get("iso_code") if isinstance(country, dict) else None
    names = city.get("names") if isinstance(city, dict) else None
    name = names.get("en") if isinstance(names, dict) else None
    lat = location.get("latitude") if isinstance(location, dict) else None
    lon = location.get("longitude") if isinstance(location, dict) else None
    latitude = longitude = None
    if isinstance(lat, int | float) and isinstance(lon, int | float):
        latitude, longitude = float(lat), float(lon)
    viewer = Viewer(
        country=code.upper() if isinstance(code, str) and code else None,
        city=name if isinstance(name, str) and name else None,
        latitude=latitude,
        longitude=longitude,
    )
    return None if viewer.is_empty() else viewer


class GeoLocator:
    """Looks client addresses up in one MaxMind database, opened once for the node's lifetime.

    Lookups are cached per address in a small LRU: a busy client costs one dict probe per request
    rather than a tree walk and a record decode. Without a database every lookup is None, and only
    trusted CDN headers can place a client.
    """

    def __init__(self, path: Path | str | None, *, cache_size: int = 4096) -> None:
        self.path = Path(path) if path is not None else None
        self.reader: maxminddb.Reader | None = None
        if self.path is not None:
            import maxminddb

            self.reader = maxminddb.open_database(str(self.path), maxminddb.MODE_AUTO)
        self.cache: LRUCache[str, Viewer | None] = LRUCache(maxsize=cache_size)

    @property
    def database_type(self) -> str | None:
        return None if self.reader is None else self.reader.metadata().database_type

    def lookup(self, ip: str) -> Viewer | None:
        if self.reader is None:
            return None
        try:
            return self.cache[ip]
        except KeyError:
            pass
        viewer = self._lookup(ip)
        self.cache[ip] = viewer
        return viewer

    def _lookup(self, ip: str) -> Viewer | None:
        assert self.reader is not None
        try:
            record = self.reader.get(ip)
        except ValueError:
            # Not an address ("unix:..." peers), or IPv6 against an IPv4-only database: no place.
            return None
        return _viewer_from_record(record)

    def locate(self, client: str, cdn_headers: Sequence[tuple[bytes, bytes]] = ()) -> Viewer | None:
        """The viewer for a request: trusted CDN headers field by field over the database.

        `cdn_headers` must hold only headers from a trusted peer; the caller decides trust. When
        the CDN names another country than the database, the database's city and location belong
        to a different place and are not mixed in.
        """
        found = self.lookup(client)
        if not cdn_headers:
            return found
        told = viewer_from_headers(cdn_headers, CDN_GEO_HEADERS)
        if told is None:
            return found
        if found is None or (told.country and found.country and told.country != found.country):
            return told
        return Viewer(
            country=told.country or found.country,
            city=told.city or found.city,
            latitude=told.latitude if told.location is not None else found.latitude,
            longitude=told.longitude if told.location is not None else found.longitude,
        )

    def close(self) -> None:
        if self.reader is not None:
            self.reader.close()
            self.reader = None
