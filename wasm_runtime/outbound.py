"""Who a function may call, and the default transport that calls them.

A function's `outbound` list names origin pools (`web`) or authorities (`api.example.com`,
`api.example.com:8443`, `127.0.0.1:9001`). `*` allows any public host. Loopback, private and
link-local addresses (and `localhost`) are refused unless listed explicitly, even under `*`.
"""

from __future__ import annotations

import ipaddress
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import httpx

from .api import OutboundRequest, OutboundResponse, OutboundTimeouts
from .errors import OutboundDenied, OutboundError


def split_authority(authority: str) -> tuple[str, int | None]:
    a = authority.rsplit("@", 1)[-1]
    if a.startswith("["):
        host, _, rest = a[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    else:
        host, _, port = a.partition(":")
    return host.lower(), (int(port) if port.isdigit() else None)


def _is_internal(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    return ip.is_loopback or ip.is_private or ip.is_link_local or ip.is_unspecified or ip.is_reserved


@dataclass(frozen=True)
class OutboundPolicy:
    allowed: tuple[str, ...] = ()
    origins: frozenset[str] = field(default_factory=frozenset)

    def check(self, scheme: str, authority: str) -> None:
        self.check_and_resolve(scheme, authority)

    def check_and_resolve(self, scheme: str, authority: str) -> str | None:
        """Returns the origin pool's name when the authority names one; raises OutboundDenied."""
        if scheme.lower() not in ("http", "https"):
            raise OutboundDenied(f"scheme {scheme!r} is not allowed")
        host, port = split_authority(authority)
        allowed = {a.lower() for a in self.allowed}
        if port is None and host in self.origins:
            if host in allowed:
                return host
            raise OutboundDenied(f"origin {host!r} is not in the function's outbound list")
        listed = (
            authority.lower() in allowed
            or (port is not None and f"{host}:{port}" in allowed)
            or host in allowed
        )
        if listed:
            return None
        if "*" in allowed and not _is_internal(host):
            return None
        if _is_internal(host):
            raise OutboundDenied(
                f"{authority} is a loopback, private or link-local address and is not listed"
            )
        raise OutboundDenied(f"{authority} is not in the function's outbound list")


async def _stream(response: httpx.Response) -> AsyncIterator[bytes]:
    try:
        async for chunk in response.aiter_raw():
            yield chunk
    except httpx.TimeoutException as exc:
        raise OutboundError("HTTP-response-timeout", str(exc)) from exc
    except httpx.HTTPError as exc:
        raise OutboundError("HTTP-response-incomplete", str(exc)) from exc
    finally:
        await response.aclose()


def _classify(exc: httpx.HTTPError) -> OutboundError:
    text = str(exc)
    if isinstance(exc, httpx.ConnectTimeout):
        return OutboundError("connection-timeout", text)
    if isinstance(exc, httpx.ReadTimeout | httpx.PoolTimeout):
        return OutboundError("HTTP-response-timeout", text)
    if isinstance(exc, httpx.ConnectError):
        lowered = text.lower()
        if "name or service" in lowered or "nodename" in lowered or "getaddrinfo" in lowered:
            return OutboundError("DNS-error", text, {"rcode": None, "info-code": None})
        return OutboundError("connection-refused", text)
    if isinstance(exc, httpx.RemoteProtocolError):
        return OutboundError("HTTP-protocol-error", text)
    if isinstance(exc, httpx.UnsupportedProtocol | httpx.InvalidURL):
        return OutboundError("HTTP-request-URI-invalid", text)
    return OutboundError("internal-error", text, text[:200])


class HttpxTransport:
    """The default transport: one shared httpx.AsyncClient, bodies streamed both ways.

    `origins` maps an origin pool name to a base URL (`{"web": "http://127.0.0.1:9001"}`); the
    gateway passes its own transport that picks a healthy endpoint instead.
    """

    def __init__(
        self, origins: Mapping[str, str] | None = None, client: httpx.AsyncClient | None = None
    ) -> None:
        self._origins = dict(origins or {})
        self._client = client or httpx.AsyncClient(
            timeout=httpx.Timeout(30.0, connect=5.0), follow_redirects=False, trust_env=False
        )

    async def send(self, request: OutboundRequest, timeouts: OutboundTimeouts) -> OutboundResponse:
        url = request.url
        if request.origin is not None:
            base = self._origins.get(request.origin)
            if base is None:
                raise OutboundError("destination-not-found", f"no endpoint for origin {request.origin!r}")
            url = base.rstrip("/") + "/" + url.split("/", 3)[3] if url.count("/") >= 3 else base
        timeout = httpx.Timeout(
            30.0 if timeouts.first_byte_s is None else timeouts.first_byte_s,
            connect=5.0 if timeouts.connect_s is None else timeouts.connect_s,
        )
        try:
            # httpx takes str names with bytes values as they are; its hints list only one type a pair
            headers = cast(Any, request.headers)
            req = self._client.build_request(
                request.method, url, headers=headers, content=request.body, timeout=timeout
            )
            response = await self._client.send(req, stream=True)
        except httpx.HTTPError as exc:
            raise _classify(exc) from exc
        headers = [(k.decode("latin-1").lower(), v) for k, v in response.headers.raw]
        return OutboundResponse(status=response.status_code, headers=headers, body=_stream(response))

    async def aclose(self) -> None:
        await self._client.aclose()
