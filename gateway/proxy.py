"""The origin proxy: a Target that forwards to the endpoints of an origin pool.

Bodies stream both ways through one shared `httpx.AsyncClient`: the client's body is handed to
httpx as an async iterator and the origin's body comes back through `aiter_raw()` (no decoding, no
joining), so a 50 MB response never sits in memory. A connect failure on an idempotent request
moves on to the next endpoint of the pool; nothing was sent, so nothing can be doubled. The pool
orders endpoints for the request's viewer and hears of every connect failure and status, which is
what passive ejection runs on.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx

from edge.geo import VIEWER_HEADER_FIELDS, viewer_from_headers
from edge.origins import EndpointState, OriginPool
from gateway.context import EdgeRequest, EdgeResponse, RawHeaders
from gateway.errors import UpstreamError, error_from
from gateway.policies.headers import strip_hop_by_hop

ORIGIN_PICK = b"x-edgefn-origin"
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
_CONNECT_ERRORS = (httpx.ConnectError, httpx.ConnectTimeout)


def shared_client(max_connections: int = 1000) -> httpx.AsyncClient:
    """The one client every origin request goes through; per-origin timeouts are set per request."""
    return httpx.AsyncClient(
        limits=httpx.Limits(
            max_connections=max_connections, max_keepalive_connections=200, keepalive_expiry=30
        ),
        timeout=httpx.Timeout(connect=2.0, read=30.0, write=30.0, pool=5.0),
        follow_redirects=False,
        trust_env=False,
    )


def forwarded_headers(request: EdgeRequest, via: bytes) -> RawHeaders:
    """Request headers as the origin should see them.

    The pipeline has already removed forwarding headers that an untrusted client sent, so any
    `x-forwarded-for` left here came from a trusted proxy and is extended, not replaced.
    """
    headers = [(k, v) for k, v in strip_hop_by_hop(request.headers) if k not in (b"host", ORIGIN_PICK)]
    prior_for = b", ".join(v for k, v in headers if k == b"x-forwarded-for")
    prior_proto = next((v for k, v in headers if k == b"x-forwarded-proto"), None)
    prior_host = next((v for k, v in headers if k == b"x-forwarded-host"), None)
    prior_via = b", ".join(v for k, v in headers if k == b"via")
    headers = [
        (k, v)
        for k, v in headers
        if k not in (b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host", b"via")
    ]
    client = (request.peer or request.client).encode()
    headers.append((b"x-forwarded-for", prior_for + b", " + client if prior_for else client))
    headers.append((b"x-forwarded-proto", prior_proto or request.scheme.encode()))
    headers.append((b"x-forwarded-host", prior_host or request.host.encode("latin-1")))
    headers.append((b"via", prior_via + b", " + via if prior_via else via))
    return headers


def _picked_first(candidates: list[EndpointState], headers: RawHeaders) -> list[EndpointState]:
    """A viewer function may name the endpoint (its URL or its region) to try first."""
    pick = next((v.decode("latin-1").strip() for k, v in headers if k == ORIGIN_PICK), None)
    if not pick:
        return candidates
    chosen = [e for e in candidates if pick in (str(e.url).rstrip("/"), e.region)]
    return chosen + [e for e in candidates if e not in chosen]


def _has_body(headers: RawHeaders) -> bool:
    return any(
        k == b"transfer-encoding" or (k == b"content-length" and v.strip() != b"0") for k, v in headers
    )


class OriginTarget:
    def __init__(self, pool: OriginPool, client: httpx.AsyncClient, *, via: str) -> None:
        self.pool = pool
        self.client = client
        self.via = f"1.1 {via}".encode()
        t = pool.config.timeouts
        self.timeout = httpx.Timeout(connect=t.connect_s, read=t.read_s, write=t.read_s, pool=t.connect_s)

    async def handle(self, request: EdgeRequest) -> EdgeResponse:
        headers = forwarded_headers(request, self.via)
        content: AsyncIterator[bytes] | bytes = request.body if _has_body(request.headers) else b""
        raw_path = request.path_with_query.encode("latin-1")
        retry = request.method in IDEMPOTENT
        last: BaseException | None = None
        # A request re-made by an edge function may carry its viewer only as headers.
        viewer = request.viewer or viewer_from_headers(request.headers, VIEWER_HEADER_FIELDS)
        for endpoint in _picked_first(self.pool.candidates(viewer), request.headers):
            try:
                return await self._send(endpoint, request.method, raw_path, headers, content)
            except _CONNECT_ERRORS as exc:
                self.pool.report_connect_failure(endpoint)
                last = exc
                if not retry:
                    break
            except httpx.HTTPError as exc:
                raise error_from(exc) from exc
        raise UpstreamError(f"origin {self.pool.name!r} unreachable", code="origin_unreachable") from last

    async def _send(
        self,
        endpoint: EndpointState,
        method: str,
        raw_path: bytes,
        headers: RawHeaders,
        content: AsyncIterator[bytes] | bytes,
    ) -> EdgeResponse:
        base = endpoint.url
        prefix = base.raw_path.rstrip(b"/") if base.raw_path not in (b"", b"/") else b""
        url = base.copy_with(raw_path=prefix + raw_path)
        upstream = self.client.build_request(
            method, url, headers=headers, content=content, timeout=self.timeout
        )
        response = await self.client.send(upstream, stream=True)
        self.pool.report_response(endpoint, response.status_code)
        out = strip_hop_by_hop(list(response.headers.raw))
        out.append((b"via", self.via))
        return EdgeResponse(
            status=response.status_code,
            headers=out,
            body=_stream(response),
            served_by=f"origin:{self.pool.name}@{base}",
        )


async def _stream(response: httpx.Response) -> AsyncIterator[bytes]:
    try:
        async for chunk in response.aiter_raw():
            yield chunk
    except httpx.HTTPError as exc:
        raise error_from(exc) from exc
    finally:
        await response.aclose()
