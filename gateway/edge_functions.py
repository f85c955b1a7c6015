"""Edge functions in front of the cache (viewer) and the origin (origin), in the Workers model.

An edge function is an ordinary `wasi:http/proxy` component. It may answer a request itself, or
forward it down the pipeline by sending it to the URL it received (same authority): that one
outbound request does not leave the node; it continues through the remaining phases (cache, origin
function, target), and what comes back is the rest of the pipeline's response, which the function
may change before answering. Other outbound requests follow the function's `outbound` policy.

Lambda@Edge's read-only headers cannot be changed: the forwarded request keeps the original
values, the answer keeps the pipeline's, and each attempt is logged and ignored. Body framing
(`content-length`, `transfer-encoding`) always follows the body the function actually sends.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Literal
from urllib.parse import urlsplit

from gateway.context import EdgeRequest, EdgeResponse, RawHeaders, empty_body
from gateway.functions.target import guest_request
from wasm_runtime import (
    OutboundRequest,
    OutboundResponse,
    OutboundTimeouts,
    OutboundTransport,
)

if TYPE_CHECKING:
    from gateway.functions.service import FunctionReference

log = logging.getLogger("edgefn.edge_functions")

Trigger = Literal["viewer", "origin"]
Downstream = Callable[[EdgeRequest], Awaitable[EdgeResponse]]

GATEWAY_SET = frozenset(
    {
        b"x-request-id",
        b"x-edgefn-node",
        b"x-edgefn-region",
        b"x-edgefn-viewer-country",
        b"x-edgefn-viewer-city",
        b"x-edgefn-viewer-latitude",
        b"x-edgefn-viewer-longitude",
        b"x-forwarded-for",
    }
)
FRAMING = frozenset({b"content-length", b"transfer-encoding"})
# Lambda@Edge's lists, by trigger (framing headers are handled apart).
READ_ONLY_REQUEST: dict[str, frozenset[bytes]] = {
    "viewer": frozenset({b"host", b"via"}) | GATEWAY_SET,
    "origin": frozenset(
        {
            b"host",
            b"via",
            b"accept-encoding",
            b"if-modified-since",
            b"if-none-match",
            b"if-range",
            b"if-unmodified-since",
        }
    )
    | GATEWAY_SET,
}
READ_ONLY_RESPONSE: dict[str, frozenset[bytes]] = {
    "viewer": frozenset({b"content-encoding", b"warning", b"via"}),
    "origin": frozenset({b"via"}),
}
# Only a viewer function may pick the origin endpoint; clients never can (the gateway drops it).
ORIGIN_PICK = b"x-edgefn-origin"


def keep_read_only(
    changed: RawHeaders, original: RawHeaders, names: frozenset[bytes], what: str, function: str
) -> RawHeaders:
    """`changed` with every read-only header put back as it was in `original`."""
    out = [(k, v) for k, v in changed if k not in names and k not in FRAMING]
    for name in names:
        before = [v for k, v in original if k == name]
        after = [v for k, v in changed if k == name]
        if before != after:
            log.warning(
                "edge function %s: change of read-only %s header %r ignored", function, what, name.decode()
            )
        out.extend((name, v) for v in before)
    return out


class PipelineTransport:
    """Outbound for an edge function: its own URL goes down the pipeline, the rest goes out."""

    def __init__(
        self,
        function: str,
        trigger: Trigger,
        request: EdgeRequest,
        downstream: Downstream,
        fallback: OutboundTransport,
    ) -> None:
        self.function = function
        self.trigger = trigger
        self.request = request
        self.downstream = downstream
        self.fallback = fallback
        self.forwarded: EdgeResponse | None = None

    async def send(self, out: OutboundRequest, timeouts: OutboundTimeouts) -> OutboundResponse:
        parts = urlsplit(out.url)
        if out.origin is not None or parts.netloc.lower() != self.request.host.lower():
            return await self.fallback.send(out, timeouts)
        headers = [(k.lower().encode("latin-1"), v) for k, v in out.headers]
        if self.trigger != "viewer":
            headers = [(k, v) for k, v in headers if k != ORIGIN_PICK]
        headers = keep_read_only(
            headers, self.request.headers, READ_ONLY_REQUEST[self.trigger], "request", self.function
        )
        if out.body is not None:
            headers.append((b"transfer-encoding", b"chunked"))  # framing follows the new body
        forwarded = EdgeRequest(
            method=out.method,
            scheme=self.request.scheme,
            host=self.request.host,
            path=parts.path or "/",
            query=parts.query.encode("latin-1"),
            headers=headers,
            body=out.body if out.body is not None else empty_body(),
            client=self.request.client,
            peer=self.request.peer,
            request_id=self.request.request_id,
        )
        response = await self.downstream(forwarded)
        self.forwarded = response
        return OutboundResponse(
            status=response.status,
            headers=[(k.decode("latin-1"), v) for k, v in response.headers],
            body=response.body,
        )

    async def aclose(self) -> None:
        """Nothing of its own to close: the fallback belongs to the runtime."""


class EdgeFunction:
    def __init__(self, target: FunctionReference, trigger: Trigger, fallback: OutboundTransport) -> None:
        self.target = target
        self.trigger = trigger
        self.fallback = fallback
        self.name = target.name

    async def run(self, request: EdgeRequest, downstream: Downstream) -> EdgeResponse:
        transport = PipelineTransport(self.name, self.trigger, request, downstream, self.fallback)
        response = await self.target.invoke(
            guest_request(request, self.target.via),
            also_allow=(request.host,),
            transport=transport,
            request_id=request.request_id,
        )
        headers = [(k.encode("latin-1"), v) for k, v in response.headers]
        if transport.forwarded is not None:
            headers = keep_read_only(
                headers, transport.forwarded.headers, READ_ONLY_RESPONSE[self.trigger], "response", self.name
            )
        else:
            headers = [(k, v) for k, v in headers if k not in FRAMING]
        return EdgeResponse(
            status=response.status,
            headers=headers,
            body=_body(response.body),
            served_by=f"edge-{self.trigger}:{self.name}",
        )


async def _body(body: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    async for chunk in body:
        yield chunk
