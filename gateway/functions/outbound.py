"""Outbound HTTP from functions, through the gateway's shared client and its origin pools.

The runtime has already applied the function's `outbound` policy; this transport only decides
where an allowed request goes: `http://ORIGIN-NAME/...` to the pool's first candidate endpoint
(the same order the origin proxy uses), anything else as addressed.
"""

from __future__ import annotations

from dataclasses import replace
from urllib.parse import urlsplit

import httpx

from edge.origins import OriginPool
from wasm_runtime import HttpxTransport, OutboundError, OutboundRequest, OutboundResponse, OutboundTimeouts


class GatewayTransport:
    def __init__(self, http: httpx.AsyncClient, pools: dict[str, OriginPool]) -> None:
        self.pools = pools
        self.inner = HttpxTransport(client=http)

    async def send(self, request: OutboundRequest, timeouts: OutboundTimeouts) -> OutboundResponse:
        if request.origin is not None:
            pool = self.pools.get(request.origin)
            if pool is None:
                raise OutboundError("destination-not-found", f"no origin pool named {request.origin!r}")
            base = pool.candidates()[0].url
            parts = urlsplit(request.url)
            path = (parts.path or "/") + ("?" + parts.query if parts.query else "")
            prefix = (
                str(base).rstrip("/")
                if base.path not in ("", "/")
                else f"{base.scheme}://{base.netloc.decode()}"
            )
            request = replace(request, url=prefix + path, origin=None)
        return await self.inner.send(request, timeouts)

    async def aclose(self) -> None:
        """The shared client belongs to the gateway, which closes it at shutdown."""
