"""The listeners' HTTP/1.1 connections: uvicorn's httptools protocol, with a bound on a request's
head, refusals in the JSON of DESIGN.md, and a response's head joined to the body write that
follows it.

uvicorn's httptools protocol takes a request line and headers of any size: one connection sent
300 MiB of headers in 0.6 s and the worker kept them (RSS 143 -> 453 MB), so a few clients could
exhaust any node's memory. Here a request's head past `max_head_bytes` (`[node]
max_request_head_bytes`, 64 KiB by default; Envoy's is 60 KiB) is refused with 431 as soon as
that many bytes of it have arrived, without waiting for its end, and the connection is closed.
Nor did uvicorn time a head: a connection that sent nothing, or half a request line, was held for
ever (slowloris); one whose head is not complete `head_timeout_s` after its first byte (`[node]
request_head_timeout_s`, 60 s as nginx's `client_header_timeout`) gets 408 and is closed, and one
that sent nothing that long after it opened is closed; both found by one sweep of a listener's
connections at most a second apart.
Between requests uvicorn's keep-alive timeout closes an idle connection.
What httptools cannot parse gets DESIGN.md's 400 JSON rather than uvicorn's plain text.

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
import functools
import logging
import socket
import weakref
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from gateway.errors import BadRequest, GatewayError, HeaderFieldsTooLarge, RequestTimeout, error_body
from gateway.request_ids import new_request_id

log = logging.getLogger("edgefn.server")

MAX_HEAD_BYTES = 64 * 1024
HEAD_TIMEOUT_S = 60.0

HEAD_STARTS = (b"HTTP/1.1 ", b"HTTP/1.0 ")
ACCEPT_PER_PASS = 32
ACCEPT_PAUSE_S = 0.1  # after an accept failed for want of descriptors or memory


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


class Http11Protocol(HttpToolsProtocol):
    """uvicorn's httptools protocol for a listener that speaks HTTP/1.1 only (`ws="none"`).

    A request asking to upgrade (WebSocket, h2c) is served as the plain request it also is, as
    nginx serves one without upgrade settings, and the proxy drops its hop-by-hop `Upgrade`
    (policies/headers.py). With a WebSocket library loaded, uvicorn handed such a request to it and
    the gateway, which answers only `http` scopes, left it with a bare 500 that bypassed routes,
    the access log and the metrics; without one, uvicorn logs two warnings for each such request,
    as many as any client cares to send."""

    max_head_bytes = MAX_HEAD_BYTES  # a listener's own subclass sets its node's (`bounded`)
    head_timeout_s = HEAD_TIMEOUT_S
    _in_head = False  # between a request's first byte and the end of its headers
    _head_bytes = 0  # bytes of chunks after which the head was still not complete
    _chunk_bytes = 0  # of the chunk being parsed
    _head_since = 0.0  # loop time the connection opened or its current head began
    _refusal: GatewayError | None = None

    @classmethod
    def bounded(cls, max_head_bytes: int, head_timeout_s: float) -> type[Http11Protocol]:
        """This protocol with other bounds on a request's head (uvicorn takes a class)."""
        bounds = {"max_head_bytes": max_head_bytes, "head_timeout_s": head_timeout_s}
        return type(cls.__name__, (cls,), bounds)

    def _unsupported_upgrade_warning(self) -> None:
        log.debug("served an Upgrade request as plain HTTP/1.1")

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._head_since = self.loop.time()
        if self.server_state not in _sweeps:
            _sweep(self.server_state, self.loop, min(1.0, self.head_timeout_s / 4))

    def _check_head(self, now: float) -> None:
        """Refuses the request whose head is overdue (by `_sweep`, not a timer per request: a
        timer set and cancelled cost ~2.4 us of every request, the stamp ~0.1)."""
        if self.transport.is_closing() or not (self.cycle is None or self._in_head):
            return  # between the end of a head and its response's end: not timed here
        if self.cycle is not None and not self.cycle.response_complete:
            self._head_since = now  # a pipelined head: its time starts when the response before ends
        elif now - self._head_since > self.head_timeout_s:
            if not self._in_head:
                # Nothing sent yet: closed without an answer, as nginx and uvicorn's keep-alive
                # timeout close an idle connection (a 408 could cross a request just sent).
                self.transport.close()
                return
            self._refusal = RequestTimeout(f"no complete request head within {self.head_timeout_s:g} s")
            self.send_400_response("")

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True
        self._head_since = self.loop.time()

    def on_headers_complete(self) -> None:
        self._in_head = False
        # The head ended inside this chunk, so the count of whole chunks never saw its last part;
        # it is measured only when it could be over (the sum is ~1 us of a request with nine headers).
        could_be_over = self._head_bytes + self._chunk_bytes > self.max_head_bytes
        self._head_bytes = 0
        if could_be_over and self._head_size() > self.max_head_bytes:
            self._refusal = self._too_large()
            raise self._refusal  # httptools stops parsing; uvicorn calls send_400_response
        super().on_headers_complete()

    def _head_size(self) -> int:
        return len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)

    def data_received(self, data: bytes) -> None:
        self._chunk_bytes = len(data)
        super().data_received(data)
        if self._in_head and not self.transport.is_closing():
            # Counted from whole chunks, so a chunk that began with the end of the request before
            # (pipelining) counts a little more than the head; never less.
            self._head_bytes += len(data)
            if self._head_bytes > self.max_head_bytes:
                self._refusal = self._too_large()
                self.send_400_response("")

    def _too_large(self) -> GatewayError:
        return HeaderFieldsTooLarge(
            f"the request line and headers are larger than {self.max_head_bytes} bytes"
        )

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to a request it could not parse, here DESIGN.md's JSON error (and 431
        for a head over the bound); the connection is closed after it, as uvicorn does."""
        error = self._refusal or BadRequest("the request is not valid HTTP/1.1")
        self._refusal = None
        self._in_head = False
        request_id = new_request_id()
        client = "{}:{}".format(*self.client) if self.client else "-"
        log.warning("refused a request from %s (%s): %s %s", client, request_id, error.status, error.message)
        body = error_body(error, request_id)
        self.transport.write(
            b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
            b"x-request-id: %s\r\nconnection: close\r\n\r\n%s"
            % (error.status, HTTPStatus(error.status).phrase.encode(), len(body), request_id.encode(), body)
        )
        self.transport.close()


_sweeps: weakref.WeakKeyDictionary[Any, asyncio.TimerHandle] = weakref.WeakKeyDictionary()


def _sweep(state: Any, loop: asyncio.AbstractEventLoop, period_s: float) -> None:
    """Every `period_s` while a listener (uvicorn's server state) has connections, its overdue
    request heads are refused; a head gets between its timeout and that plus `period_s`."""
    now = loop.time()
    for connection in list(state.connections):
        if isinstance(connection, Http11Protocol):
            connection._check_head(now)
    if state.connections:
        _sweeps[state] = loop.call_later(period_s, _sweep, state, loop, period_s)
    else:
        _sweeps.pop(state, None)


class JoinedHeadProtocol(Http11Protocol):
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(JoinedHeadTransport(transport, self.loop))  # type: ignore[arg-type]


class Acceptor:
    """Takes the connections waiting on a listening socket, up to ACCEPT_PER_PASS each time the
    socket is readable, and hands them to the listener's protocol.

    uvloop (libuv) accepts one connection per pass of the event loop, and a pass lasts as long as
    the guests it runs on the loop's thread: 64 connections opened at once waited in the kernel's
    accept queue for up to a second, about two taken every 100 ms, while the requests already
    in the gateway took ~5 ms each (docs/performance.md). uvloop's own server still watches the
    socket; whichever is woken first takes what is waiting. The cap bounds what one pass spends
    on accepting. For a process that is its socket's only one, without TLS (server._Server)."""

    def __init__(
        self,
        listener: socket.socket,
        protocol: Callable[[], asyncio.Protocol],
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self._sock = listener.dup()  # our own descriptor to watch: the loop's server has the other
        self._sock.setblocking(False)
        self._protocol = protocol
        self._loop = loop
        self._pause: asyncio.TimerHandle | None = None
        self._starting: set[asyncio.Task[Any]] = set()  # held: the loop keeps tasks only weakly
        loop.add_reader(self._sock.fileno(), self._accept)

    def _accept(self) -> None:
        for _ in range(ACCEPT_PER_PASS):
            try:
                conn, _peer = self._sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # out of descriptors or buffers: the socket stays readable
                log.warning("accepting a connection failed: %s; pausing %.1f s", exc, ACCEPT_PAUSE_S)
                self._loop.remove_reader(self._sock.fileno())
                self._pause = self._loop.call_later(ACCEPT_PAUSE_S, self._resume)
                return
            conn.setblocking(False)
            task = self._loop.create_task(self._loop.connect_accepted_socket(self._protocol, conn))
            self._starting.add(task)
            task.add_done_callback(functools.partial(self._started, conn))

    def _started(self, conn: socket.socket, task: asyncio.Task[Any]) -> None:
        self._starting.discard(task)
        error = "cancelled" if task.cancelled() else task.exception()
        if error is not None:
            log.warning("a connection could not be started: %s", error)
            conn.close()

    def _resume(self) -> None:
        self._pause = None
        self._loop.add_reader(self._sock.fileno(), self._accept)

    def close(self) -> None:
        """Stop taking connections (before the server closes its own listener)."""
        if self._pause is not None:
            self._pause.cancel()
        else:
            self._loop.remove_reader(self._sock.fileno())
        self._sock.close()
