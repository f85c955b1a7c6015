"""Outbound HTTP from functions, through the gateway's shared client and its origin pools.

The runtime has already applied the function's `outbound` policy; this transport only decides
where an allowed request goes: `http://ORIGIN-NAME/...` to the pool's endpoints in the order the
origin proxy would use (nearest to the viewer named by any `x-edgefn-viewer-*` headers the function
passed on, else to the node), anything else as addressed. As in the proxy, a refused connection
moves a bodiless idempotent request on to the next endpoint, and every outcome feeds the pool's
passive ejection.
"""

from __future__ import annotations

from dataclasses import replace
from urllib.parse import urlsplit

import httpx

from edge.geo import VIEWER_HEADER_FIELDS, viewer_from_headers
from edge.origins import EndpointState, OriginPool
from wasm_runtime import HttpxTransport, OutboundError, OutboundRequest, OutboundResponse, OutboundTimeouts

IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
_CONNECT_FAILURES = frozenset({"connection-refused", "connection-timeout"})


class GatewayTransport:
    def __init__(self, http: httpx.AsyncClient, pools: dict[str, OriginPool]) -> None:
        self.pools = pools
        self.inner = HttpxTransport(client=http)

    async def send(self, request: OutboundRequest, timeouts: OutboundTimeouts) -> OutboundResponse:
        if request.origin is None:
            return await self.inner.send(request, timeouts)
        pool = self.pools.get(request.origin)
        if pool is None:
            raise OutboundError("destination-not-found", f"no origin pool named {request.origin!r}")
        headers = [(k.lower().encode("latin-1"), v) for k, v in request.headers]
        candidates = pool.candidates(viewer_from_headers(headers, VIEWER_HEADER_FIELDS))
        retry = request.method.upper() in IDEMPOTENT and request.body is None
        for i, endpoint in enumerate(candidates):
            try:
                response = await self.inner.send(_to_endpoint(request, endpoint), timeouts)
            except OutboundError as exc:
                if exc.kind in _CONNECT_FAILURES:
                    pool.report_connect_failure(endpoint)
                    if retry and i + 1 < len(candidates):
                        continue
                raise
            pool.report_response(endpoint, response.status)
            return response
        raise OutboundError("destination-not-found", f"origin pool {request.origin!r} has no endpoints")

    async def aclose(self) -> None:
        """The shared client belongs to the gateway, which closes it at shutdown."""


def _to_endpoint(request: OutboundRequest, endpoint: EndpointState) -> OutboundRequest:
    base = endpoint.url
    parts = urlsplit(request.url)
    path = (parts.path or "/") + ("?" + parts.query if parts.query else "")
    prefix = (
        str(base).rstrip("/") if base.path not in ("", "/") else f"{base.scheme}://{base.netloc.decode()}"
    )
    return replace(request, url=prefix + path, origin=None)
