"""The public listener's HTTP/1.1 connections: uvicorn's httptools protocol, with a response's
head joined to the body write that follows it.

uvicorn writes a response's status line and headers as soon as the app starts the response, and
its body in further writes. On loopback every write is a system call that also delivers the
segment and wakes the client: a function's answer (head, body with the chunked end) was two or
three of them, and `perf` put 9 % of the event loop's time in the client's wake-ups alone. Here
the head waits, and goes out with the next write of the same pass of the event loop (in one
`writelines`, nothing copied); a response whose body comes later has its head sent at the end of
that pass. Order is kept whatever is held: the connection's next write, its close, or the end of
the pass sends the held head first.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

HEAD_STARTS = (b"HTTP/1.1 ", b"HTTP/1.0 ")


class JoinedHeadTransport:
    """What uvicorn's protocol writes through. Writing, closing and the buffer size are its own;
    the rest is the socket's transport (`is_closing` spelled out, as uvicorn asks it for every
    request)."""

    __slots__ = ("_head", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._head: bytes | None = None

    def write(self, data: bytes) -> None:
        head = self._head
        if head is not None:
            self._head = None
            self._transport.writelines((head, data))
        elif type(data) is bytes and data.startswith(HEAD_STARTS):  # a body like it loses nothing
            self._head = data
            self._loop.call_soon(self._send_head)
        else:
            self._transport.write(data)

    def _send_head(self) -> None:
        head = self._head
        if head is not None:
            self._head = None
            if not self._transport.is_closing():
                self._transport.write(head)

    def close(self) -> None:
        self._send_head()
        self._transport.close()

    def abort(self) -> None:
        self._head = None
        self._transport.abort()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + (len(self._head) if self._head else 0)

    def __getattr__(self, name: str) -> Any:
        """Everything else: reading, the socket's details, and what any protocol may call (a
        WebSocket upgrade hands this transport on)."""
        return getattr(self._transport, name)


class JoinedHeadProtocol(HttpToolsProtocol):
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(JoinedHeadTransport(transport, self.loop))  # type: ignore[arg-type]
