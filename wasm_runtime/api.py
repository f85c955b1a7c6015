"""The value types that cross the boundary between the runtime and its caller (the gateway)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Protocol


class LastChunk(bytes):
    """A body chunk known, when it was handed over, to be the body's last: nothing but the end
    follows it. A consumer may send it as the end of the body (the gateway does, which saves the
    separate write of HTTP/1.1's chunked terminator); one that ignores the type loses nothing."""

    __slots__ = ()


@dataclass(frozen=True)
class Limits:
    memory_mb: int = 128
    timeout_s: float = 10.0
    instance_reuse: int = 0


@dataclass
class InvocationStats:
    duration_ms: float = 0.0
    init_ms: float = 0.0
    max_memory_bytes: int = 0
    fresh_instance: bool = True
    instance_slot: bool = False  # the instance was made in an instance slot (wasm_runtime/_slots.py)
    thread_wait_ms: float = 0.0  # waited for a guest thread (the runtime's cap), counted in the timeout


@dataclass
class GuestRequest:
    method: str
    scheme: str
    authority: str
    path_with_query: str
    headers: list[tuple[str, bytes]]
    body: AsyncIterator[bytes] | None = None


@dataclass
class GuestResponse:
    status: int
    headers: list[tuple[str, bytes]]
    body: AsyncIterator[bytes]
    stats: InvocationStats = field(default_factory=InvocationStats)


@dataclass(frozen=True)
class OutboundTimeouts:
    """Seconds; None leaves the transport's default. Set from the guest's request-options."""

    connect_s: float | None = None
    first_byte_s: float | None = None
    between_bytes_s: float | None = None


@dataclass
class OutboundRequest:
    method: str
    url: str
    headers: list[tuple[str, bytes]]
    body: AsyncIterator[bytes] | None
    origin: str | None = None


@dataclass
class OutboundResponse:
    status: int
    headers: list[tuple[str, bytes]]
    body: AsyncIterator[bytes]


class OutboundTransport(Protocol):
    async def send(self, request: OutboundRequest, timeouts: OutboundTimeouts) -> OutboundResponse:
        """Sends one request; raises OutboundError(kind) on failure."""
        ...
