"""What one request carries through the phases of the pipeline.

`EdgeRequest` and `EdgeResponse` are the gateway's own request and response: raw ASGI-style header
lists (lower-case byte names, repeats kept in order) and bodies that are async iterators of bytes,
so nothing on the request path has to join a body. A `Target` (an origin pool or a function) is the
one-method seam between the pipeline and what answers, like httpx's transports.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from starlette.datastructures import Headers

from edge.geo import Viewer
from routes import Route, RouteMatch

RawHeaders = list[tuple[bytes, bytes]]


if TYPE_CHECKING:
    from gateway.client import ClientConnection


async def empty_body() -> AsyncIterator[bytes]:
    return
    yield b""  # pragma: no cover - makes this an async generator


async def single_chunk(data: bytes) -> AsyncIterator[bytes]:
    yield data


@dataclass
class EdgeRequest:
    method: str
    scheme: str
    host: str  # the Host the client asked for, port included if it sent one
    path: str  # raw (percent-encoded) path, after any rewrite
    query: bytes  # raw query string, passed through unchanged
    headers: RawHeaders
    body: AsyncIterator[bytes]
    client: str  # the client address as the gateway believes it (see TrustedProxies)
    peer: str = ""  # the address the connection came from
    request_id: str = ""
    viewer: Viewer | None = None  # where the client is (edge.geo), when anything says so

    @property
    def has_body(self) -> bool:
        """Whether the headers announce a body (Transfer-Encoding, or a Content-Length other than
        0). A target need not read a body that is not announced: HTTP/1.1 sends none then."""
        return any(
            k == b"transfer-encoding" or (k == b"content-length" and v.strip() != b"0")
            for k, v in self.headers
        )

    @property
    def path_with_query(self) -> str:
        return self.path + ("?" + self.query.decode("latin-1") if self.query else "")

    def header_view(self) -> Headers:
        return Headers(raw=self.headers)


@dataclass
class EdgeResponse:
    status: int
    headers: RawHeaders
    body: AsyncIterator[bytes] = field(default_factory=empty_body)
    # what answered, for the access log and metrics: "origin:web@http://...", "function:hello:$LATEST"
    served_by: str = ""
    error_code: str | None = None  # set when the gateway answered with its own error


class Target(Protocol):
    async def handle(self, request: EdgeRequest) -> EdgeResponse: ...


@dataclass
class RequestContext:
    """Per-request state; lives for one request, owned by the pipeline."""

    request_id: str
    started: float = field(default_factory=time.perf_counter)
    route: Route | None = None
    match: RouteMatch | None = None
    target: str = "-"
    status: int = 0
    bytes_out: int = 0
    error_code: str | None = None
    # The connection does not refer back to this context: a request's objects are freed by reference
    # counting when it ends, not left in a cycle for the collector to find among everyone in flight.
    connection: ClientConnection | None = None

    @property
    def bytes_in(self) -> int:
        """Request body bytes read from the client."""
        return self.connection.bytes_in if self.connection is not None else 0

    def elapsed_ms(self) -> float:
        return (time.perf_counter() - self.started) * 1000.0


def header_values(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> list[bytes]:
    return [v for k, v in headers if k == name]
