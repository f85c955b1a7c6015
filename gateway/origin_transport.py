"""A lean HTTP/1.1 client transport for plain-HTTP origins: asyncio Protocol + httptools.

Why not httpx's default transport: on the proxy path httpcore's pool scans every pooled
connection and polls its socket on each request and each response, and anyio wraps every read in
a cancel scope; profiles of the gateway spent 40-60 % of its CPU there. This transport keeps what
a reverse proxy needs and nothing else:

- a per-(scheme, host, port) LIFO deque of idle keep-alive connections, with explicit limits
  (`PoolLimits`: per host, in total, keep-alive expiry) and a FIFO wait for a free slot;
- connect, read, write and pool timeouts per request (`Timeouts`, or httpx's
  `request.extensions["timeout"]`);
- request bodies streamed with flow control (each write waits for `drain` above the socket's
  high-water mark), content-length or chunked;
- response bodies handed out as they arrive, with backpressure: above `high_water` buffered
  bytes the socket stops reading (`pause_reading`) until the consumer catches up, so a slow
  client keeps the origin's send blocked instead of this process buffering the whole body;
- a connection goes back to the pool only when its response was read to the end, both sides
  allow keep-alive and the request body was sent in full;
- httpx's exception types (`ConnectError`, `ConnectTimeout`, `ReadTimeout`, `WriteTimeout`,
  `PoolTimeout`, `RemoteProtocolError`, `ReadError`), so `gateway.errors` maps them unchanged.

Two entry points: `request()` for the origin proxy (raw header lists in, raw header lists and a
body iterator out: no `httpx.Request`/`Response` per request), and `handle_async_request()` so the
same pool serves every other user of the shared `httpx.AsyncClient` (health checks, functions'
outbound calls). HTTP only: https origins keep httpx's default transport (see `gateway.proxy`).
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterable
from dataclasses import dataclass

import httptools
import httpx

RawHeaders = list[tuple[bytes, bytes]]
Key = tuple[str, str, int]  # scheme, host, port

NO_BODY_STATUS = frozenset({204, 304})
# An origin's status line and headers (1xx heads included) past this fail the request as a protocol
# error (502), as Envoy's max_response_headers_kb (60) and nginx's "upstream sent too big header":
# httptools keeps a head of any size, and a function may fetch from any public host.
MAX_RESPONSE_HEAD_BYTES = 64 * 1024
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})


@dataclass(frozen=True)
class PoolLimits:
    """How many origin connections may exist, and how long an idle one is kept."""

    max_per_host: int = 256
    max_total: int = 1000
    keepalive_expiry_s: float = 30.0

    def __post_init__(self) -> None:
        if self.max_per_host < 1 or self.max_total < 1:
            raise ValueError("PoolLimits: max_per_host and max_total must be >= 1")
        if self.keepalive_expiry_s < 0:
            raise ValueError("PoolLimits: keepalive_expiry_s must be >= 0")


@dataclass(frozen=True)
class Timeouts:
    """Seconds, None for no limit. `read` bounds each wait for response bytes (the head
    included); `write` each wait for the socket to take request bytes; `pool` the wait for a
    connection slot when the limits are reached."""

    connect: float | None = 5.0
    read: float | None = 30.0
    write: float | None = 30.0
    pool: float | None = 5.0

    @classmethod
    def from_extensions(cls, timeout: dict[str, float | None] | None) -> Timeouts:
        if not timeout:
            return cls()
        return cls(timeout.get("connect"), timeout.get("read"), timeout.get("write"), timeout.get("pool"))


class _StaleConnection(Exception):
    """A reused connection closed before any byte of the response: safe to replay elsewhere."""


def _expire(waiter: asyncio.Future[None], error: type[Exception], message: str) -> None:
    if not waiter.done():
        waiter.set_exception(error(message))


class _Connection(asyncio.Protocol):
    """One keep-alive connection to an origin; one request/response exchange at a time.

    The protocol callbacks (`data_received`, the parser's `on_*`) only append and wake; every
    wait (for the head, for body bytes, for the socket to drain) is a future with a timer armed
    just for that wait.
    """

    def __init__(self, pool: OriginTransport, key: Key) -> None:
        self.pool = pool
        self.key = key
        self.loop = pool.loop
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.counted = True  # holds one of the pool's slots until forgotten
        self.idle = False  # sitting in the pool's idle deque
        self.idle_since = 0.0
        self.requests = 0
        self._write_paused = False
        self._drain_waiter: asyncio.Future[None] | None = None
        self._high_water = pool.high_water
        self._reset()

    def _reset(self) -> None:
        self.parser: httptools.HttpResponseParser | None = None
        self.status = 0
        self.reason = b""
        self.headers: RawHeaders = []
        self.head_done = False
        self.complete = False
        self.keep_alive = False
        self.must_close = False
        self.error: Exception | None = None
        self.got_bytes = False
        self.wrote = False
        self.http_version = "1.1"
        self._is_head = False
        self._chunks: collections.deque[bytes] = collections.deque()
        self._buffered = 0
        self._reading_paused = False
        self._waiter: asyncio.Future[None] | None = None
        self._length: int | None = None  # content-length of the response body, when it has one
        self._seen = 0  # body bytes parsed so far
        self._remaining = -1  # body bytes still to come, read without the parser; -1: parser's job
        self._close_delimited = False
        self._head_bytes = 0  # bytes of chunks after which the head was still not complete
        self._chunk_bytes = 0  # of the chunk being parsed

    # --- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self._remaining > 0:
            # Content-length body after its head: count bytes rather than parse them.
            if len(data) <= self._remaining:
                self._remaining -= len(data)
                self._push(data)
            else:
                self._push(data[: self._remaining])
                self._remaining = 0
                self.must_close = True  # bytes beyond the response: the connection is not clean
            if self._remaining == 0:
                self._finish()
            return
        parser = self.parser
        if parser is None or self.complete:
            # Nothing was asked: an origin talking out of turn cannot be trusted with the next request.
            self.must_close = True
            if self.idle and self.transport is not None:
                self.transport.close()
            return
        self.got_bytes = True
        self._chunk_bytes = len(data)
        try:
            parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(httpx.RemoteProtocolError("origin switched protocols; only HTTP/1.1 is proxied"))
        except httptools.HttpParserError as exc:
            if self.complete:
                self.must_close = True  # garbage after a complete response
            elif isinstance(exc.__context__, httpx.RemoteProtocolError):
                self._fail(exc.__context__)  # raised by a callback here
            else:
                self._fail(httpx.RemoteProtocolError(f"malformed response from origin: {exc}"))
        if not self.head_done and self.error is None:
            self._head_bytes += len(data)
            if self._head_bytes > MAX_RESPONSE_HEAD_BYTES:
                self._fail(_head_too_large())
        if self._length is not None and self.head_done and not self.complete and self.error is None:
            self._remaining = self._length - self._seen
            self.parser = None  # the rest of this body bypasses the parser

    def eof_received(self) -> bool:
        return False  # close our side too; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.idle:
            self.pool._drop_idle(self)
        if self.parser is not None or self._remaining > 0:
            if self._close_delimited and self.head_done and not self.complete:
                self._finish()  # end of a body delimited by the close
            elif not self.complete:
                if not self.got_bytes:
                    self._fail(_StaleConnection("origin closed the connection without sending a response"))
                elif self.head_done:
                    self._fail(httpx.RemoteProtocolError("origin closed the connection mid-body"))
                else:
                    self._fail(httpx.RemoteProtocolError("origin closed the connection mid-headers"))
        waiter = self._drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(httpx.WriteError("origin closed the connection while the request was sent"))

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        waiter = self._drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # --- httptools callbacks ----------------------------------------------------------------

    def on_status(self, reason: bytes) -> None:
        self.reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        parser = self.parser
        assert parser is not None
        if self._head_bytes + self._chunk_bytes > MAX_RESPONSE_HEAD_BYTES:  # then it could be over
            size = len(self.reason) + sum(len(name) + len(value) + 4 for name, value in self.headers)
            if size > MAX_RESPONSE_HEAD_BYTES:
                raise _head_too_large()  # data_received fails the request with it
        status = parser.get_status_code()
        if 100 <= status < 200:
            self.headers = []  # 1xx (100 Continue, 103 Early Hints) precede the real response
            self.reason = b""
            return
        self.status = status
        self.keep_alive = parser.should_keep_alive()
        self.http_version = parser.get_http_version()
        self.head_done = True
        if self._is_head or status in NO_BODY_STATUS:
            self._finish()
        else:
            chunked = length = None
            for k, v in self.headers:
                if k == b"transfer-encoding":
                    chunked = True
                elif k == b"content-length":
                    length = v
            if chunked is None and length is not None:
                self._length = int(length)  # llhttp has already refused a malformed one
            elif chunked is None:
                self._close_delimited = True
        self._wake()

    def on_body(self, body: bytes) -> None:
        self._seen += len(body)
        self._push(body)

    def on_message_complete(self) -> None:
        if not self.head_done:
            return  # the end of a 1xx
        self._finish()

    # --- the exchange, called by the pool ----------------------------------------------------

    def start(self, is_head: bool) -> None:
        self._reset()
        self._is_head = is_head
        self.parser = httptools.HttpResponseParser(self)
        self.requests += 1

    def write(self, data: bytes) -> None:
        if self.closed or self.transport is None:
            if self.wrote:
                raise httpx.WriteError("origin closed the connection while the request was sent")
            raise _StaleConnection("origin closed the connection before the request was sent")
        self.wrote = True
        self.transport.write(data)

    async def drain(self, timeout: float | None) -> None:
        if not self._write_paused:
            return
        if self.closed:
            raise httpx.WriteError("origin closed the connection while the request was sent")
        waiter = self._drain_waiter = self.loop.create_future()
        timer = None
        if timeout is not None:
            timer = self.loop.call_later(
                timeout, _expire, waiter, httpx.WriteTimeout, "origin did not take the request body in time"
            )
        try:
            await waiter
        finally:
            self._drain_waiter = None
            if timer is not None:
                timer.cancel()

    async def read_head(self, timeout: float | None) -> None:
        while not self.head_done:
            if self.error is not None:
                raise self.error
            await self._wait(timeout, "origin did not send a response in time")

    async def next_chunk(self, timeout: float | None) -> bytes | None:
        """Body bytes as one socket read brought them, or None at the end. (Joining waiting
        chunks into one bigger write cost more CPU per MiB in the copy than it saved.)"""
        while True:
            chunks = self._chunks
            if chunks:
                chunk = chunks.popleft()
                self._buffered -= len(chunk)
                if (
                    self._reading_paused
                    and self._buffered <= self._high_water // 2  # hysteresis: fewer stop/start calls
                    and not self.closed
                    and self.transport is not None
                ):
                    self._reading_paused = False
                    self.transport.resume_reading()
                return chunk
            if self.error is not None:
                raise self.error
            if self.complete:
                return None
            await self._wait(timeout, "origin did not send the body in time")

    async def _wait(self, timeout: float | None, message: str) -> None:
        waiter = self._waiter = self.loop.create_future()
        timer = None
        if timeout is not None:
            timer = self.loop.call_later(timeout, _expire, waiter, httpx.ReadTimeout, message)
        try:
            await waiter
        except httpx.ReadTimeout as exc:
            self.must_close = True
            self.error = exc
            raise
        finally:
            self._waiter = None
            if timer is not None:
                timer.cancel()

    @property
    def buffered(self) -> int:
        return self._buffered

    @property
    def reusable(self) -> bool:
        return self.complete and self.keep_alive and not self.must_close and not self.closed

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.close()

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    # --- internals --------------------------------------------------------------------------

    def _push(self, data: bytes) -> None:
        self._chunks.append(data)
        self._buffered += len(data)
        if self._buffered >= self._high_water and not self._reading_paused and self.transport is not None:
            self._reading_paused = True
            self.transport.pause_reading()
        self._wake()

    def _finish(self) -> None:
        if self.complete:
            return
        self.complete = True
        self._remaining = -1
        if self._close_delimited:
            self.keep_alive = False
        self.parser = None
        self._wake()

    def _fail(self, exc: Exception) -> None:
        if self.error is None:
            self.error = exc
        self.must_close = True
        self.parser = None
        self._remaining = -1
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


def _head_too_large() -> httpx.RemoteProtocolError:
    return httpx.RemoteProtocolError(f"origin's response head is over {MAX_RESPONSE_HEAD_BYTES} bytes")


class _Host:
    __slots__ = ("idle", "key", "open", "waiters")

    def __init__(self, key: Key) -> None:
        self.key = key
        self.idle: collections.deque[_Connection] = collections.deque()
        self.open = 0
        self.waiters: collections.deque[asyncio.Future[None]] = collections.deque()


@dataclass(slots=True)
class OriginResponse:
    """Status, lower-cased raw headers and the body of an origin's response."""

    status: int
    headers: RawHeaders
    reason: bytes
    http_version: str
    body: Body


class Body(httpx.AsyncByteStream):
    """The response body: an async iterator of chunks as they arrive; `aclose` ends it early.

    Reading to the end hands the connection back to the pool (when it may be reused); closing
    before the end closes the connection, since the rest of the body is still on its way.
    """

    def __init__(self, pool: OriginTransport, conn: _Connection, read_timeout: float | None) -> None:
        self._pool = pool
        self._conn: _Connection | None = conn
        self._timeout = read_timeout

    def __aiter__(self) -> Body:
        return self

    @property
    def buffered(self) -> int:
        """Bytes received from the origin and not yet handed out: bounded by the high-water mark
        plus one socket read, however slow the reader."""
        return self._conn.buffered if self._conn is not None else 0

    async def __anext__(self) -> bytes:
        conn = self._conn
        if conn is None:
            raise StopAsyncIteration
        try:
            chunk = await conn.next_chunk(self._timeout)
        except _StaleConnection as exc:
            self._release(reusable=False)
            raise httpx.RemoteProtocolError(str(exc)) from None
        except BaseException:
            self._release(reusable=False)
            raise
        if chunk is None:
            self._release(reusable=conn.reusable)
            raise StopAsyncIteration
        return chunk

    async def aclose(self) -> None:
        conn = self._conn
        if conn is not None:
            # Everything read (a reader that stops at content-length): the connection is clean.
            self._release(reusable=conn.reusable and not conn.buffered)

    def _release(self, reusable: bool) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            self._pool._release(conn, reusable)


class OriginTransport(httpx.AsyncBaseTransport):
    """The pool of origin connections; `request()` for the proxy, `handle_async_request()` for httpx."""

    def __init__(self, limits: PoolLimits | None = None, *, high_water: int = 256 * 1024) -> None:
        if high_water < 1024:
            raise ValueError("OriginTransport: high_water must be at least 1024 bytes")
        self.limits = limits or PoolLimits()
        self.high_water = high_water
        self._hosts: dict[Key, _Host] = {}
        self._open = 0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()  # for max_total
        self.loop: asyncio.AbstractEventLoop = None  # type: ignore[assignment]  # bound on first use
        self._sweep: asyncio.TimerHandle | None = None
        self._closed = False
        self.connections_made = 0  # over the transport's life, for tests and metrics

    @property
    def open_connections(self) -> int:
        return self._open

    def idle_connections(self) -> int:
        return sum(len(h.idle) for h in self._hosts.values())

    # --- the proxy's entry point ------------------------------------------------------------

    async def request(
        self,
        key: Key,
        method: str,
        target: bytes,
        authority: bytes,
        headers: RawHeaders,
        body: bytes | AsyncIterable[bytes] | None,
        timeouts: Timeouts,
    ) -> OriginResponse:
        """Send one request and return once the response head is in; the body streams after.

        `headers` are sent as given (no `host`: it comes from `authority`). A body iterator is
        sent chunked unless `headers` carry a content-length; a bytes body gets its length.
        """
        lines = [method.encode("ascii"), b" ", target, b" HTTP/1.1\r\nhost: ", authority, b"\r\n"]
        for k, v in headers:
            lines += (k, b": ", v, b"\r\n")
        expected = len(headers) + 3
        chunked = False
        if body is not None:
            has_length = any(k == b"content-length" for k, _ in headers)
            if isinstance(body, bytes):
                if not has_length:
                    lines += (b"content-length: ", str(len(body)).encode(), b"\r\n")
                    expected += 1
            elif not has_length:
                chunked = True
                lines.append(b"transfer-encoding: chunked\r\n")
                expected += 1
        lines.append(b"\r\n")
        return await self._exchange(key, method, b"".join(lines), expected, body or None, chunked, timeouts)

    # --- httpx's entry point ----------------------------------------------------------------

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        if url.scheme != "http":
            raise httpx.UnsupportedProtocol(f"OriginTransport speaks plain HTTP only, not {url.scheme!r}")
        key: Key = ("http", url.host, url.port or 80)
        timeouts = Timeouts.from_extensions(request.extensions.get("timeout"))
        raw = request.headers.raw
        lines = [request.method.encode("ascii"), b" ", url.raw_path, b" HTTP/1.1\r\n"]
        chunked = has_length = False
        for k, v in raw:
            lines += (k, b": ", v, b"\r\n")
            name = k.lower()
            if name == b"transfer-encoding":
                chunked = v.strip().lower() == b"chunked"
            elif name == b"content-length":
                has_length = True
        lines.append(b"\r\n")
        body: bytes | AsyncIterable[bytes] | None
        try:
            body = request.content or None
        except httpx.RequestNotRead:
            body = request.stream if (chunked or has_length) else None  # type: ignore[assignment]
        try:
            response = await self._exchange(
                key, request.method, b"".join(lines), len(raw) + 2, body, chunked, timeouts
            )
        except httpx.TransportError as exc:
            exc.request = request
            raise
        return httpx.Response(
            response.status,
            headers=response.headers,
            stream=response.body,
            extensions={
                "http_version": b"HTTP/" + response.http_version.encode(),
                "reason_phrase": response.reason,
            },
            request=request,
        )

    async def aclose(self) -> None:
        self._closed = True
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None
        for host in self._hosts.values():
            while host.idle:
                conn = host.idle.pop()
                conn.idle = False
                self._forget(conn)
                conn.close()

    # --- one exchange -----------------------------------------------------------------------

    async def _exchange(
        self,
        key: Key,
        method: str,
        head: bytes,
        lines: int,
        body: bytes | AsyncIterable[bytes] | None,
        chunked: bool,
        timeouts: Timeouts,
    ) -> OriginResponse:
        # Every line of the head ends in CRLF and no name or value may hold CR or LF: counting
        # both is one C-speed pass each, and stops header injection from any layer above.
        if head.count(b"\r") != lines or head.count(b"\n") != lines:
            raise httpx.LocalProtocolError("a request header name or value contains CR or LF")
        streamed = body is not None and not isinstance(body, bytes)
        idempotent = method in IDEMPOTENT
        self.loop = asyncio.get_running_loop()
        for attempt in (0, 1):
            conn, reused = await self._acquire(key, timeouts)
            conn.start(method == "HEAD")
            try:
                if body is None:
                    conn.write(head)
                elif streamed:
                    conn.write(head)
                    await self._send_body(conn, body, chunked, timeouts.write)  # type: ignore[arg-type]
                elif len(body) <= 65536:  # type: ignore[arg-type]
                    conn.write(head + body)  # type: ignore[operator]
                else:
                    conn.write(head)
                    conn.write(body)  # type: ignore[arg-type]
                await conn.drain(timeouts.write)
                await conn.read_head(timeouts.read)
            except _StaleConnection as exc:
                self._release(conn, reusable=False)
                # A pooled connection the origin closed as it was taken: replay once on a fresh
                # one if nothing can have been acted on (not written yet, or idempotent).
                if reused and attempt == 0 and not streamed and (idempotent or not conn.wrote):
                    continue
                raise httpx.RemoteProtocolError(str(exc)) from None
            except BaseException:
                self._release(conn, reusable=False)
                raise
            return OriginResponse(
                conn.status, conn.headers, conn.reason, conn.http_version, Body(self, conn, timeouts.read)
            )
        raise AssertionError("unreachable")  # pragma: no cover

    async def _send_body(
        self, conn: _Connection, body: AsyncIterable[bytes], chunked: bool, timeout: float | None
    ) -> None:
        async for chunk in body:
            if conn.head_done or conn.error is not None:
                # The origin answered before taking the whole body (a 413, say): stop sending,
                # and never reuse a connection whose request was cut short.
                conn.must_close = True
                aclose = getattr(body, "aclose", None)
                if aclose is not None:
                    await aclose()
                return
            if chunk:
                conn.write(b"%x\r\n%b\r\n" % (len(chunk), chunk) if chunked else chunk)
                await conn.drain(timeout)
        if chunked:
            conn.write(b"0\r\n\r\n")

    # --- the pool ---------------------------------------------------------------------------

    async def _acquire(self, key: Key, timeouts: Timeouts) -> tuple[_Connection, bool]:
        if self._closed:
            raise httpx.ConnectError("the origin transport is closed")
        host = self._hosts.get(key)
        if host is None:
            host = self._hosts[key] = _Host(key)
        limits = self.limits
        deadline = None if timeouts.pool is None else self.loop.time() + timeouts.pool
        while True:
            idle = host.idle
            while idle:
                conn = idle.pop()
                conn.idle = False
                if (
                    conn.closed
                    or conn.must_close
                    or (self.loop.time() - conn.idle_since > limits.keepalive_expiry_s)
                ):
                    self._forget(conn)
                    conn.close()
                    continue
                return conn, True
            if host.open < limits.max_per_host and self._open < limits.max_total:
                host.open += 1
                self._open += 1
                try:
                    conn = await self._connect(key, timeouts.connect)
                except BaseException:
                    host.open -= 1
                    self._open -= 1
                    self._wake(host)
                    raise
                return conn, False
            if host.open < limits.max_per_host and self._evict_idle():
                continue  # room under max_total, made by closing another host's idle connection
            await self._wait_slot(host if host.open >= limits.max_per_host else None, deadline)

    async def _connect(self, key: Key, timeout: float | None) -> _Connection:
        _, host, port = key
        conn = _Connection(self, key)
        try:
            async with asyncio.timeout(timeout):
                await self.loop.create_connection(lambda: conn, host, port)
        except TimeoutError:
            raise httpx.ConnectTimeout(f"connecting to {host}:{port} took over {timeout} s") from None
        except OSError as exc:
            raise httpx.ConnectError(f"cannot connect to {host}:{port}: {exc}") from exc
        self.connections_made += 1
        return conn

    async def _wait_slot(self, host: _Host | None, deadline: float | None) -> None:
        """Wait, in arrival order, until a connection of `host` (or any, for max_total) frees up."""
        waiters = host.waiters if host is not None else self._waiters
        waiter: asyncio.Future[None] = self.loop.create_future()
        waiters.append(waiter)
        timeout = None if deadline is None else max(0.0, deadline - self.loop.time())
        try:
            async with asyncio.timeout(timeout):
                await waiter
        except TimeoutError:
            raise httpx.PoolTimeout("no origin connection became free in time") from None
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self._wake(host)  # woken, then cancelled: the wake-up goes to the next in line
            raise
        finally:
            if not waiter.done():
                waiter.cancel()
            if waiter in waiters:
                waiters.remove(waiter)

    def _release(self, conn: _Connection, reusable: bool) -> None:
        host = self._hosts[conn.key]
        if reusable and conn.reusable and not self._closed:
            conn.idle = True
            conn.idle_since = self.loop.time()
            host.idle.append(conn)
            self._expire_oldest(host)
            if self._sweep is None:
                self._sweep = self.loop.call_later(self.limits.keepalive_expiry_s + 0.5, self._sweep_idle)
        else:
            self._forget(conn)
            if conn.complete and conn.error is None:
                conn.close()
            else:
                conn.abort()  # mid-response: the rest must not be read by anyone
        self._wake(host)

    def _forget(self, conn: _Connection) -> None:
        """Give the connection's slot back (once)."""
        if conn.counted:
            conn.counted = False
            self._hosts[conn.key].open -= 1
            self._open -= 1

    def _drop_idle(self, conn: _Connection) -> None:
        """An idle connection was closed by the origin."""
        host = self._hosts[conn.key]
        conn.idle = False
        if conn in host.idle:
            host.idle.remove(conn)
        self._forget(conn)
        self._wake(host)

    def _wake(self, host: _Host | None) -> None:
        """Wake the first live waiter of `host`, else the first waiting for the total limit."""
        for waiters in (host.waiters, self._waiters) if host is not None else (self._waiters,):
            while waiters:
                waiter = waiters.popleft()
                if not waiter.done():
                    waiter.set_result(None)
                    return

    def _evict_idle(self) -> bool:
        """Close the longest-idle connection of any host, to make room under max_total."""
        oldest: _Host | None = None
        for h in self._hosts.values():
            if h.idle and (oldest is None or h.idle[0].idle_since < oldest.idle[0].idle_since):
                oldest = h
        if oldest is None:
            return False
        conn = oldest.idle.popleft()
        conn.idle = False
        self._forget(conn)
        conn.close()
        return True

    def _expire_oldest(self, host: _Host) -> None:
        limit = self.loop.time() - self.limits.keepalive_expiry_s
        idle = host.idle
        while idle and idle[0].idle_since < limit:
            conn = idle.popleft()
            conn.idle = False
            self._forget(conn)
            conn.close()

    def _sweep_idle(self) -> None:
        self._sweep = None
        for host in self._hosts.values():
            self._expire_oldest(host)
        if any(h.idle for h in self._hosts.values()):
            self._sweep = self.loop.call_later(self.limits.keepalive_expiry_s + 0.5, self._sweep_idle)
