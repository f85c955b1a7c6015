"""The origin proxy: a Target that forwards to the endpoints of an origin pool.

Bodies stream both ways, chunk by chunk, never joined: the client's body goes out as an async
iterator and the origin's comes back as the chunks arrive, so a 50 MB response never sits in
memory. Plain-HTTP endpoints go straight to the shared client's `OriginTransport` with raw header
lists (no httpx Request/Response per request: that was most of the proxy's CPU); https endpoints
go through `httpx.AsyncClient.send` and its default transport. A connect failure on an idempotent
request moves on to the next endpoint of the pool; nothing was sent, so nothing can be doubled.
The pool orders endpoints for the request's viewer and hears of every connect failure and status,
which is what passive ejection runs on.
"""

from __future__ import annotations

import http.cookiejar
from collections.abc import AsyncIterator

import httpx

from edge.geo import VIEWER_HEADER_FIELDS, viewer_from_headers
from edge.origins import EndpointState, OriginPool
from gateway.context import EdgeRequest, EdgeResponse, RawHeaders
from gateway.errors import UpstreamError, error_from
from gateway.origin_transport import Body, Key, OriginTransport, PoolLimits, Timeouts
from gateway.policies.headers import strip_hop_by_hop

ORIGIN_PICK = b"x-edgefn-origin"
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
_CONNECT_ERRORS = (httpx.ConnectError, httpx.ConnectTimeout)


class OriginClient(httpx.AsyncClient):
    """The shared client, with its plain-HTTP transport at hand for the proxy's direct path."""

    def __init__(
        self, origin_transport: OriginTransport, https_transport: HttpsTransport, **kwargs: object
    ) -> None:
        super().__init__(
            mounts={"http://": origin_transport},
            transport=https_transport,
            **kwargs,  # type: ignore[arg-type]
        )
        self.origin_transport = origin_transport
        self.https_transport = https_transport


class HttpsTransport(httpx.AsyncBaseTransport):
    """httpx's default transport, made on the first https request.

    Making it loads the CA bundle into an SSL context and imports httpcore: 40-80 ms of a node's
    start, spent before the first request even when no origin or function uses https.
    """

    def __init__(self, limits: httpx.Limits) -> None:
        self.limits = limits
        self.transport: httpx.AsyncHTTPTransport | None = None

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self.transport is None:
            self.transport = httpx.AsyncHTTPTransport(limits=self.limits, trust_env=False)
        return await self.transport.handle_async_request(request)

    async def aclose(self) -> None:
        if self.transport is not None:
            await self.transport.aclose()


def _no_cookies() -> http.cookiejar.CookieJar:
    """A jar that keeps nothing: the client is shared by every user, and a `set-cookie` kept from
    one user's response would otherwise go out on the next user's request to that origin."""
    return http.cookiejar.CookieJar(http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))


def shared_client(max_connections: int = 1000, max_per_host: int = 256) -> OriginClient:
    """The one client every origin request goes through; per-origin timeouts are set per request."""
    origin = OriginTransport(
        PoolLimits(max_per_host=max_per_host, max_total=max_connections, keepalive_expiry_s=30)
    )
    limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=200, keepalive_expiry=30)
    return OriginClient(
        origin,
        HttpsTransport(limits),
        timeout=httpx.Timeout(connect=2.0, read=30.0, write=30.0, pool=5.0),
        follow_redirects=False,
        trust_env=False,
        cookies=_no_cookies(),
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


class _Destination:
    """What requests to one endpoint need, worked out once: pool key, `host`, path prefix."""

    __slots__ = ("authority", "key", "prefix", "served_by", "url")

    def __init__(self, url: httpx.URL, pool_name: str) -> None:
        self.url = url
        self.key: Key | None = ("http", url.host, url.port or 80) if url.scheme == "http" else None
        self.authority = url.netloc
        self.prefix = url.raw_path.rstrip(b"/") if url.raw_path not in (b"", b"/") else b""
        self.served_by = f"origin:{pool_name}@{url}"


class OriginTarget:
    def __init__(self, pool: OriginPool, client: httpx.AsyncClient, *, via: str) -> None:
        self.pool = pool
        self.client = client
        # Present on the client from `shared_client()`; any other client takes the httpx path.
        self.transport: OriginTransport | None = getattr(client, "origin_transport", None)
        self.via = f"1.1 {via}".encode()
        t = pool.config.timeouts
        self.timeout = httpx.Timeout(connect=t.connect_s, read=t.read_s, write=t.read_s, pool=t.connect_s)
        self.timeouts = Timeouts(connect=t.connect_s, read=t.read_s, write=t.read_s, pool=t.connect_s)
        self._destinations: dict[int, _Destination] = {}

    def destination(self, endpoint: EndpointState) -> _Destination:
        url = endpoint.url
        found = self._destinations.get(id(url))
        if found is None or found.url is not url:
            found = self._destinations[id(url)] = _Destination(url, self.pool.name)
        return found

    async def handle(self, request: EdgeRequest) -> EdgeResponse:
        headers = forwarded_headers(request, self.via)
        body = request.body if request.has_body else None
        raw_path = request.path_with_query.encode("latin-1")
        retry = request.method in IDEMPOTENT
        last: BaseException | None = None
        # A request re-made by an edge function may carry its viewer only as headers.
        viewer = request.viewer or viewer_from_headers(request.headers, VIEWER_HEADER_FIELDS)
        for endpoint in _picked_first(self.pool.candidates(viewer), request.headers):
            try:
                return await self._send(endpoint, request.method, raw_path, headers, body)
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
        body: AsyncIterator[bytes] | None,
    ) -> EdgeResponse:
        dest = self.destination(endpoint)
        if dest.key is not None and self.transport is not None:
            response = await self.transport.request(
                dest.key, method, dest.prefix + raw_path, dest.authority, headers, body, self.timeouts
            )
            out_body: AsyncIterator[bytes] = _OriginBody(response.body)
            status, raw = response.status, response.headers
        else:
            upstream = self.client.build_request(
                method,
                dest.url.copy_with(raw_path=dest.prefix + raw_path),
                headers=headers,
                content=body if body is not None else b"",
                timeout=self.timeout,
            )
            got = await self.client.send(upstream, stream=True)
            # httpx keeps the origin's spelling (`Connection`, `Server`); the gateway's lists are lower-case.
            status, raw, out_body = (
                got.status_code,
                [(k.lower(), v) for k, v in got.headers.raw],
                _stream(got),
            )
        self.pool.report_response(endpoint, status)
        out = strip_hop_by_hop(raw)
        out.append((b"via", self.via))
        return EdgeResponse(status=status, headers=out, body=out_body, served_by=dest.served_by)


class _OriginBody:
    """The origin's body as it arrives, with transport errors turned into the gateway's (502/504)."""

    __slots__ = ("_body",)

    def __init__(self, body: Body) -> None:
        self._body = body

    def __aiter__(self) -> _OriginBody:
        return self

    async def __anext__(self) -> bytes:
        try:
            return await self._body.__anext__()
        except httpx.HTTPError as exc:
            raise error_from(exc) from exc

    async def aclose(self) -> None:
        await self._body.aclose()


async def _stream(response: httpx.Response) -> AsyncIterator[bytes]:
    try:
        async for chunk in response.aiter_raw():
            yield chunk
    except httpx.HTTPError as exc:
        raise error_from(exc) from exc
    finally:
        await response.aclose()
