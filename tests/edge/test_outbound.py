"""Functions' outbound calls to `http://ORIGIN-NAME/` pick endpoints as the origin proxy does."""

from __future__ import annotations

import asyncio

import httpx

from edge.origins import OriginPool
from gateway.functions.outbound import GatewayTransport
from routes.config import Endpoint, Origin
from tests.edge.conftest import REGION_MAP, REGIONS
from wasm_runtime import OutboundError, OutboundRequest, OutboundTimeouts

CONFIG = """
[node]
region = "eu-west"
data_dir = "{data_dir}"
%(regions)s
[origins.web]
endpoints = [
  { url = "%(us)s", region = "us-east" },
  { url = "%(eu)s", region = "eu-west" },
]
select = "nearest"
timeouts = { connect_s = 1, read_s = 5 }

[functions.fetch]
component = "%(fetch)s"
outbound = ["web"]
env = { ORIGIN = "web" }

[[routes]]
name = "fetch"
path = "/fetch/{*rest}"
function = "fetch"
rewrite = { path = "/{rest}" }
"""


def test_function_outbound_goes_to_the_nearest_endpoint_and_fails_over(
    edge_gateway, origins, example_components
) -> None:
    us, eu = origins("us", "eu")
    gw = edge_gateway(
        CONFIG % {"regions": REGIONS, "us": us.url, "eu": eu.url, "fetch": example_components["fetch"]}
    )
    r = httpx.get(f"{gw.url}/fetch/echo/x", timeout=60)
    assert r.status_code == 200, r.text
    assert r.headers["x-origin"] == "eu"  # nearest to the node's own region
    eu.stop()
    r = httpx.get(f"{gw.url}/fetch/echo/x", timeout=60)
    assert r.status_code == 200, r.text
    assert r.headers["x-origin"] == "us"
    state = {e["region"]: e for e in gw.pool("web")["endpoints"]}
    assert state["eu-west"]["ejected"] is True


def test_transport_follows_the_viewer_headers_a_function_passes_on(origins) -> None:
    us, ap = origins("us", "ap")
    origin = Origin(
        "web",
        (Endpoint(us.url, region="us-east"), Endpoint(ap.url, region="ap-northeast")),
        "nearest",
    )

    async def run() -> list[str]:
        async with httpx.AsyncClient() as client:
            transport = GatewayTransport(client, {"web": OriginPool(origin, REGION_MAP, "us-east")})
            seen = []
            for headers in (
                [],
                [("x-edgefn-viewer-latitude", b"35.6"), ("x-edgefn-viewer-longitude", b"139.7")],
            ):
                request = OutboundRequest("GET", "http://web/echo/", headers, None, origin="web")
                response = await transport.send(request, OutboundTimeouts())
                seen.append(dict(response.headers)["x-origin"].decode())
                async for _ in response.body:
                    pass
            # A body cannot be sent twice: a POST is not moved on to the next endpoint.
            ap.stop()

            async def body():
                yield b"x"

            post = OutboundRequest(
                "POST",
                "http://web/echo/",
                [("x-edgefn-viewer-latitude", b"35.6"), ("x-edgefn-viewer-longitude", b"139.7")],
                body(),
                origin="web",
            )
            try:
                await transport.send(post, OutboundTimeouts())
            except OutboundError as exc:
                seen.append(exc.kind)
            return seen

    assert asyncio.run(run()) == ["us", "ap", "connection-refused"]
