"""Fixtures for the edge tests: a MaxMind database of test addresses, origins that say who they
are and can be made sick, and a gateway whose pools the test can inspect."""

from __future__ import annotations

import asyncio
import json
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from mmdb_writer import MMDBWriter
from netaddr import IPSet

from examples import origin as origin_module
from gateway.app import Gateway
from routes import load_config
from routes.config import Region
from tests.gateway.conftest import shared_data_dir
from tests.servers import ServerThread

# Documentation ranges (RFC 5737, RFC 3849) placed in three countries; a fourth place has a
# country but no location, as in a Country database.
DUBLIN = "198.51.100.7"
WASHINGTON = "203.0.113.7"
TOKYO = "192.0.2.7"
GERMANY_NO_LOCATION = "2001:db8::7"
UNLISTED = "100.64.0.9"

PLACES: dict[str, dict[str, Any]] = {
    "198.51.100.0/24": {
        "country": {"iso_code": "IE", "names": {"en": "Ireland"}},
        "city": {"names": {"en": "Dublin"}},
        "location": {"latitude": 53.3498, "longitude": -6.2603},
    },
    "203.0.113.0/24": {
        "country": {"iso_code": "US", "names": {"en": "United States"}},
        "city": {"names": {"en": "Washington"}},
        "location": {"latitude": 38.8951, "longitude": -77.0364},
    },
    "192.0.2.0/24": {
        "country": {"iso_code": "JP", "names": {"en": "Japan"}},
        "city": {"names": {"en": "Tōkyō"}},
        "location": {"latitude": 35.6895, "longitude": 139.6917},
    },
    "2001:db8::/32": {"country": {"iso_code": "DE", "names": {"en": "Germany"}}},
}

REGION_MAP = {
    "eu-west": Region("eu-west", 53.35, -6.26),
    "us-east": Region("us-east", 38.90, -77.04),
    "ap-northeast": Region("ap-northeast", 35.68, 139.69),
}
# The same regions as edgefn.toml text.
REGIONS = """
[regions.eu-west]
location = [53.35, -6.26]
[regions.us-east]
location = [38.90, -77.04]
[regions.ap-northeast]
location = [35.68, 139.69]
"""


def write_geo_db(path: Path, places: dict[str, dict[str, Any]], database_type: str = "GeoIP2-City") -> Path:
    writer = MMDBWriter(ip_version=6, ipv4_compatible=True, database_type=database_type)
    for network, record in places.items():
        writer.insert_network(IPSet([network]), record)
    writer.to_db_file(str(path))
    return path


@pytest.fixture
def geo_db(tmp_path: Path) -> Path:
    return write_geo_db(tmp_path / "geo-city.mmdb", PLACES)


class NamedOrigin:
    """examples.origin under a name it sends back in `x-origin`; `healthy` and `failing` are
    switches a test flips: a sick origin answers its health path with 503 (a slow one late), a
    failing one answers everything else with 500."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.healthy = True
        self.failing = False
        self.health_delay_s = 0.0
        self.hits = 0  # requests other than health probes
        self.probes = 0

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await origin_module.app(scope, receive, send)
            return
        name = self.name.encode()
        if scope["path"] == "/healthz":
            self.probes += 1
            await asyncio.sleep(self.health_delay_s)
            status = 200 if self.healthy else 503
            body = json.dumps({"ok": self.healthy, "origin": self.name}).encode()
            await send({"type": "http.response.start", "status": status, "headers": [(b"x-origin", name)]})
            await send({"type": "http.response.body", "body": body})
            return
        self.hits += 1
        if self.failing:
            await send({"type": "http.response.start", "status": 500, "headers": [(b"x-origin", name)]})
            await send({"type": "http.response.body", "body": b"failing"})
            return

        async def named(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), (b"x-origin", name)]}
            await send(message)

        await origin_module.app(scope, receive, named)


class RunningOrigin:
    def __init__(self, name: str) -> None:
        self.app = NamedOrigin(name)
        self.server = ServerThread(self.app, lifespan="off").start()
        self.url = self.server.url
        self.running = True

    def stop(self) -> None:
        if self.running:
            self.server.stop()
            self.running = False


@pytest.fixture
def origins() -> Iterator[Callable[..., list[RunningOrigin]]]:
    """Start named origins: `origins("eu", "us")`; all are stopped at the end."""
    started: list[RunningOrigin] = []

    def start(*names: str) -> list[RunningOrigin]:
        new = [RunningOrigin(n) for n in names]
        started.extend(new)
        return new

    yield start
    for o in started:
        o.stop()


class RunningGateway:
    def __init__(self, gateway: Gateway, server: ServerThread) -> None:
        self.gateway = gateway
        self.server = server
        self.url = server.url

    def pool(self, name: str) -> dict[str, Any]:
        return self.gateway.pools[name].describe()


@pytest.fixture
def edge_gateway(tmp_path: Path) -> Iterator[Callable[..., RunningGateway]]:
    """Start a real gateway for a config text (`{data_dir}` filled in) and keep hold of it."""
    started: list[ServerThread] = []
    shared_data_dir(tmp_path / "data")

    def start(toml: str, before_start: Callable[[Gateway], None] | None = None) -> RunningGateway:
        path = tmp_path / f"edgefn-{len(started)}.toml"
        path.write_text(textwrap.dedent(toml).replace("{data_dir}", str(tmp_path / "data")))
        gateway = Gateway(load_config(path), env={})
        if before_start is not None:
            before_start(gateway)
        server = ServerThread(gateway).start()
        started.append(server)
        return RunningGateway(gateway, server)

    yield start
    for server in started:
        server.stop()
