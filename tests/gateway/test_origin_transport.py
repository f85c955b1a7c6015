"""OriginTransport against real loopback servers: examples/origin.py and raw asyncio servers whose
misbehaviour is scripted per test (chunked, close-delimited, resets, stalls, stale keep-alive)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import socket
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import uvloop

from examples.origin import pattern
from gateway.origin_transport import (
    MAX_RESPONSE_HEAD_BYTES,
    OriginResponse,
    OriginTransport,
    PoolLimits,
    Timeouts,
)
from gateway.proxy import shared_client

FAST = Timeouts(connect=5, read=10, write=10, pool=10)


Run = Callable[[Coroutine[Any, Any, Any]], Any]


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request: pytest.FixtureRequest) -> Run:
    """Each test on the default loop and on uvloop (what `edgefn serve` runs on)."""
    factory = uvloop.new_event_loop if request.param == "uvloop" else asyncio.new_event_loop

    def run_bounded(coro: Coroutine[Any, Any, Any]) -> Any:
        async def bounded() -> Any:
            async with asyncio.timeout(60):
                return await coro

        with asyncio.Runner(loop_factory=factory) as runner:
            return runner.run(bounded())

    return run_bounded


@dataclass
class Request:
    method: str
    target: str
    headers: dict[str, str]
    body: bytes
    connection: int  # which connection of the server it came on, from 1


Handler = Callable[[Request, asyncio.StreamWriter], Awaitable[bool]]  # returns: keep the connection


@dataclass
class RawServer:
    """An HTTP/1.1 server on a loopback port that reads requests and lets `handler` answer."""

    handler: Handler
    connections: int = 0
    active: int = 0
    max_active: int = 0
    requests: list[Request] = field(default_factory=list)
    server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])

    @property
    def key(self) -> tuple[str, str, int]:
        return ("http", "127.0.0.1", self.port)

    @property
    def authority(self) -> bytes:
        return f"127.0.0.1:{self.port}".encode()

    async def __aenter__(self) -> RawServer:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        number = self.connections
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            while True:
                try:
                    request = await _read_request(reader, number)
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                self.requests.append(request)
                if not await self.handler(request, writer):
                    return
        finally:
            self.active -= 1
            writer.close()


async def _read_request(reader: asyncio.StreamReader, connection: int) -> Request:
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
    line, *lines = head.split("\r\n")[:-2]
    method, target, _ = line.split(" ", 2)
    headers = {}
    for h in lines:
        name, _, value = h.partition(":")
        headers[name.strip().lower()] = value.strip()
    body = b""
    if headers.get("transfer-encoding") == "chunked":
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            data = await reader.readexactly(size + 2)
            if size == 0:
                break
            body += data[:-2]
    elif "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    return Request(method, target, headers, body, connection)


def respond(status: int = 200, body: bytes = b"ok", headers: str = "", *, keep: bool = True) -> Handler:
    async def handler(_request: Request, writer: asyncio.StreamWriter) -> bool:
        writer.write(
            f"HTTP/1.1 {status} Whatever\r\ncontent-length: {len(body)}\r\n{headers}\r\n".encode() + body
        )
        await writer.drain()
        return keep

    return handler


def held_until(release: asyncio.Event) -> Handler:
    """Answers (with the request's target as the body) only once `release` is set."""

    async def handler(request: Request, writer: asyncio.StreamWriter) -> bool:
        await release.wait()
        return await respond(body=request.target.encode())(request, writer)

    return handler


async def send(
    t: OriginTransport,
    server: RawServer,
    target: str = "/",
    *,
    method: str = "GET",
    headers: list[tuple[bytes, bytes]] | None = None,
    body: bytes | AsyncIterator[bytes] | None = None,
    timeouts: Timeouts = FAST,
) -> tuple[OriginResponse, bytes]:
    response = await t.request(
        server.key, method, target.encode(), server.authority, headers or [], body, timeouts
    )
    data = b"".join([c async for c in response.body])
    return response, data


# --- framing ------------------------------------------------------------------------------------


def test_keep_alive_connection_is_reused_as_the_server_counts(run: Run) -> None:
    async def main() -> None:
        async with RawServer(respond(body=b"hello", headers="Server: Raw\r\n")) as server:
            t = OriginTransport()
            for _ in range(5):
                response, data = await send(t, server)
                assert (response.status, data) == (200, b"hello")
                assert (b"server", b"Raw") in response.headers  # names lower-cased, values kept
            assert server.connections == 1
            assert t.connections_made == 1
            assert {r.connection for r in server.requests} == {1}
            assert server.requests[0].headers["host"] == f"127.0.0.1:{server.port}"
            assert t.idle_connections() == 1
            await t.aclose()
            assert t.open_connections == 0

    run(main())


def test_closing_a_body_reuses_the_connection_only_when_it_was_read_to_the_end(run: Run) -> None:
    async def main() -> None:
        async with RawServer(respond(body=b"hello")) as server:
            t = OriginTransport()
            for _ in range(3):
                response = await t.request(server.key, "GET", b"/", server.authority, [], None, FAST)
                assert await response.body.__anext__() == b"hello"  # all of content-length
                await response.body.aclose()
            assert server.connections == 1
            server.handler = respond(body=b"x" * 5_000_000)
            response = await t.request(server.key, "GET", b"/", server.authority, [], None, FAST)
            await response.body.__anext__()
            await response.body.aclose()  # the rest is still on its way: this connection is done
            assert t.open_connections == 0
            await send(t, server)
            assert server.connections == 2
            await t.aclose()

    run(main())


def test_chunked_response_is_reassembled_and_the_connection_reused(run: Run) -> None:
    async def chunked(_request: Request, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for part in (b"abc", b"d" * 70_000, b"e"):
            writer.write(b"%x;ext=1\r\n%b\r\n" % (len(part), part))
            await writer.drain()
        writer.write(b"0\r\nx-trailer: 1\r\n\r\n")
        return True

    async def main() -> None:
        async with RawServer(chunked) as server:
            t = OriginTransport()
            for _ in range(2):
                response, data = await send(t, server)
                assert data == b"abc" + b"d" * 70_000 + b"e"
                assert (b"transfer-encoding", b"chunked") in response.headers
            assert server.connections == 1
            await t.aclose()

    run(main())


def test_close_delimited_body_ends_at_the_close_and_is_not_reused(run: Run) -> None:
    async def close_delimited(_request: Request, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\n" + b"x" * 100_000)
        await writer.drain()
        return False  # the close ends the body

    async def main() -> None:
        async with RawServer(close_delimited) as server:
            t = OriginTransport()
            for _ in range(2):
                _, data = await send(t, server)
                assert data == b"x" * 100_000
            assert server.connections == 2
            assert t.open_connections == 0
            await t.aclose()

    run(main())


def test_head_response_has_no_body_and_keeps_the_connection(run: Run) -> None:
    async def main() -> None:
        async with RawServer(respond(body=b"")) as server:
            t = OriginTransport()

            async def head_then_get(_request: Request, writer: asyncio.StreamWriter) -> bool:
                if _request.method == "HEAD":
                    writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 1234\r\n\r\n")
                    return True
                return await respond(body=b"after")(_request, writer)

            server.handler = head_then_get
            response, data = await send(t, server, method="HEAD")
            assert (response.status, data) == (200, b"")
            _, data = await send(t, server)
            assert data == b"after"
            assert server.connections == 1
            await t.aclose()

    run(main())


def test_informational_responses_are_skipped(run: Run) -> None:
    async def early_hints(_request: Request, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a.css>\r\n\r\n")
        await writer.drain()
        writer.write(b"HTTP/1.1 201 Created\r\ncontent-length: 2\r\n\r\nhi")
        return True

    async def main() -> None:
        async with RawServer(early_hints) as server:
            t = OriginTransport()
            response, data = await send(t, server)
            assert (response.status, response.reason, data) == (201, b"Created", b"hi")
            assert all(k != b"link" for k, _ in response.headers)
            await t.aclose()

    run(main())


def test_request_bodies_bytes_and_streamed_chunked_or_with_length(run: Run) -> None:
    async def echo(request: Request, writer: asyncio.StreamWriter) -> bool:
        doc = json.dumps(
            {
                "te": request.headers.get("transfer-encoding"),
                "cl": request.headers.get("content-length"),
                "sha": hashlib.sha256(request.body).hexdigest(),
            }
        ).encode()
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%b" % (len(doc), doc))
        return True

    data = pattern(3 * 1024 * 1024 + 5)
    sha = hashlib.sha256(data).hexdigest()

    async def chunks() -> AsyncIterator[bytes]:
        for i in range(0, len(data), 100_000):
            yield data[i : i + 100_000]

    async def main() -> None:
        async with RawServer(echo) as server:
            t = OriginTransport()
            _, raw = await send(t, server, method="POST", body=data)
            assert json.loads(raw) == {"te": None, "cl": str(len(data)), "sha": sha}
            _, raw = await send(t, server, method="POST", body=chunks())
            assert json.loads(raw) == {"te": "chunked", "cl": None, "sha": sha}
            length = [(b"content-length", str(len(data)).encode())]
            _, raw = await send(t, server, method="PUT", body=chunks(), headers=length)
            assert json.loads(raw) == {"te": None, "cl": str(len(data)), "sha": sha}
            assert server.connections == 1
            await t.aclose()

    run(main())


def test_examples_origin_download_and_upload_are_byte_exact(origin: str, run: Run) -> None:
    port = int(origin.rsplit(":", 1)[1])
    key, authority = ("http", "127.0.0.1", port), f"127.0.0.1:{port}".encode()
    n = 20 * 1024 * 1024 + 3

    async def main() -> None:
        t = OriginTransport()
        response = await t.request(key, "GET", f"/bytes?n={n}".encode(), authority, [], None, FAST)
        digest, size = hashlib.sha256(), 0
        async for chunk in response.body:
            digest.update(chunk)
            size += len(chunk)
        assert (size, digest.hexdigest()) == (n, hashlib.sha256(pattern(n)).hexdigest())
        upload = pattern(5 * 1024 * 1024)

        async def chunks() -> AsyncIterator[bytes]:
            for i in range(0, len(upload), 65536):
                yield upload[i : i + 65536]

        response = await t.request(key, "POST", b"/echo/up?q=1", authority, [], chunks(), FAST)
        doc = json.loads(b"".join([c async for c in response.body]))
        assert doc["body_size"] == len(upload)
        assert doc["body_sha256"] == hashlib.sha256(upload).hexdigest()
        assert t.connections_made == 1
        await t.aclose()

    run(main())


# --- failures ------------------------------------------------------------------------------------


def test_connection_reset_mid_body_is_a_protocol_error_and_frees_the_slot(run: Run) -> None:
    async def cut(_request: Request, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 1000000\r\n\r\n" + b"x" * 1000)
        await writer.drain()
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        writer.transport.abort()  # RST
        return False

    async def main() -> None:
        async with RawServer(cut) as server:
            t = OriginTransport()
            response = await t.request(server.key, "GET", b"/", server.authority, [], None, FAST)
            with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
                async for _ in response.body:
                    pass
            assert t.open_connections == 0
            await t.aclose()

    run(main())


@pytest.mark.parametrize("shape", ["endless", "whole", "many-1xx"])
def test_a_response_head_over_the_bound_is_a_protocol_error_and_kept_no_further(run: Run, shape: str) -> None:
    """An origin (or any host a function fetches from) cannot make the gateway keep a head of any
    size: an endless header fails the request after about MAX_RESPONSE_HEAD_BYTES, a whole head
    over it as it completes, and so does an endless run of 1xx heads."""
    sent = 0

    async def big(_request: Request, writer: asyncio.StreamWriter) -> bool:
        nonlocal sent
        if shape == "whole":
            writer.write(b"HTTP/1.1 200 OK\r\nx-big: " + b"a" * MAX_RESPONSE_HEAD_BYTES + b"\r\n\r\n")
            await writer.drain()
            return False
        writer.write(b"HTTP/1.1 200 OK\r\nx-endless: " if shape == "endless" else b"")
        try:
            while sent < 64 * MAX_RESPONSE_HEAD_BYTES:
                piece = (
                    b"a" * 4096 if shape == "endless" else b"HTTP/1.1 103 Early Hints\r\nlink: </x>\r\n\r\n"
                )
                writer.write(piece)
                sent += len(piece)
                await writer.drain()
                await asyncio.sleep(0.001)  # paced, so the kernel's buffers do not take it all at once
        except ConnectionError:
            pass
        return False

    async def main() -> None:
        async with RawServer(big) as server:
            t = OriginTransport()
            with pytest.raises(httpx.RemoteProtocolError, match="response head is over"):
                await send(t, server)
            await t.aclose()

    run(main())
    if shape != "whole":
        assert sent < 64 * MAX_RESPONSE_HEAD_BYTES, "the origin was let send without end"


def test_slow_headers_are_a_read_timeout_and_the_connection_is_dropped(run: Run) -> None:
    async def slow_first(request: Request, writer: asyncio.StreamWriter) -> bool:
        if len(server.requests) == 1:
            await asyncio.sleep(3)
        return await respond(body=b"late")(request, writer)

    server = RawServer(slow_first)

    async def main() -> None:
        async with server:
            t = OriginTransport()
            quick = Timeouts(connect=5, read=0.3, write=5, pool=5)
            with pytest.raises(httpx.ReadTimeout):
                await send(t, server, timeouts=quick)
            assert t.open_connections == 0
            _, data = await send(t, server)
            assert data == b"late"
            assert server.connections == 2  # the timed-out connection was not reused
            await t.aclose()

    run(main())


def test_a_stall_mid_body_is_a_read_timeout(run: Run) -> None:
    async def stall(_request: Request, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhalf")
        await writer.drain()
        await asyncio.sleep(5)
        return False

    async def main() -> None:
        async with RawServer(stall) as server:
            t = OriginTransport()
            response = await t.request(
                server.key, "GET", b"/", server.authority, [], None, Timeouts(read=0.3)
            )
            assert await response.body.__anext__() == b"half"
            with pytest.raises(httpx.ReadTimeout):
                await response.body.__anext__()
            assert t.open_connections == 0
            await t.aclose()

    run(main())


def test_refused_connection_is_connect_error(run: Run) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: refused

    async def main() -> None:
        t = OriginTransport()
        with pytest.raises(httpx.ConnectError, match=r"cannot connect to 127\.0\.0\.1"):
            await t.request(("http", "127.0.0.1", port), "GET", b"/", b"x", [], None, FAST)
        assert t.open_connections == 0
        await t.aclose()

    run(main())


def test_unresolvable_host_is_connect_error_naming_the_lookup(run: Run) -> None:
    async def main() -> None:
        t = OriginTransport()
        with pytest.raises(httpx.ConnectError) as caught:
            await t.request(("http", "no-such-host.invalid", 80), "GET", b"/", b"x", [], None, FAST)
        assert "name" in str(caught.value).lower() or "address" in str(caught.value).lower()
        await t.aclose()

    run(main())


def test_connect_timeout_when_the_listener_never_accepts(run: Run) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    # Fill the accept queue: further SYNs are dropped and a connect hangs.
    fillers = []
    for _ in range(4):
        f = socket.socket()
        f.setblocking(False)
        f.connect_ex(("127.0.0.1", port))
        fillers.append(f)

    async def main() -> None:
        t = OriginTransport()
        with pytest.raises(httpx.ConnectTimeout):
            await t.request(("http", "127.0.0.1", port), "GET", b"/", b"x", [], None, Timeouts(connect=0.5))
        assert t.open_connections == 0
        await t.aclose()

    try:
        run(main())
    finally:
        for f in [*fillers, listener]:
            f.close()


def test_header_with_a_line_break_is_refused_before_anything_is_sent(run: Run) -> None:
    async def main() -> None:
        async with RawServer(respond()) as server:
            t = OriginTransport()
            for bad in ([(b"x-a", b"1\r\nx-injected: 1")], [(b"x-a", b"1\nx-b: 2")], [(b"x\r\n", b"1")]):
                with pytest.raises(httpx.LocalProtocolError):
                    await send(t, server, headers=bad)
            assert server.requests == []
            await t.aclose()

    run(main())


def test_stale_pooled_connection_is_replayed_for_idempotent_requests_only(run: Run) -> None:
    async def close_second(request: Request, writer: asyncio.StreamWriter) -> bool:
        # Answers the first request of each connection; on the second, closes without a word,
        # as an origin whose keep-alive timer fired just as the request arrived.
        if sum(r.connection == request.connection for r in server.requests) > 1:
            return False
        return await respond(body=b"fresh")(request, writer)

    server = RawServer(close_second)

    async def main() -> None:
        async with server:
            t = OriginTransport()
            await send(t, server)
            _, data = await send(t, server)  # goes out on the pooled connection, which dies
            assert data == b"fresh"
            assert server.connections == 2

            async def body() -> AsyncIterator[bytes]:
                yield b"payload"

            with pytest.raises(httpx.RemoteProtocolError):
                await send(t, server, method="POST", body=body())
            assert server.connections == 2  # not replayed
            await t.aclose()

    run(main())


# --- limits and backpressure -------------------------------------------------------------------


def test_per_host_limit_is_respected_and_waiters_are_served_in_turn(run: Run) -> None:
    release = asyncio.Event()

    async def main() -> None:
        async with RawServer(held_until(release)) as server:
            t = OriginTransport(PoolLimits(max_per_host=2, max_total=10))
            tasks = [asyncio.create_task(send(t, server, f"/{i}")) for i in range(5)]
            await asyncio.sleep(0.5)
            assert server.max_active == 2
            assert t.open_connections == 2
            release.set()
            results = await asyncio.gather(*tasks)
            assert [data for _, data in results] == [f"/{i}".encode() for i in range(5)]  # echoed
            assert server.max_active == 2
            assert server.connections == 2
            await t.aclose()

    run(main())


def test_total_limit_waits_and_pool_timeout_when_nothing_frees(run: Run) -> None:
    release = asyncio.Event()

    async def main() -> None:
        async with RawServer(held_until(release)) as a, RawServer(held_until(release)) as b:
            t = OriginTransport(PoolLimits(max_per_host=5, max_total=1))
            first = asyncio.create_task(send(t, a))
            await asyncio.sleep(0.2)
            with pytest.raises(httpx.PoolTimeout):
                await send(t, b, timeouts=Timeouts(pool=0.3))
            waiting = asyncio.create_task(send(t, b))
            await asyncio.sleep(0.2)
            assert b.connections == 0
            release.set()
            await first
            # a's connection went idle; b's waiter closes it to stay within max_total
            (response, _) = await waiting
            assert response.status == 200
            assert (a.connections, b.connections) == (1, 1)
            assert t.open_connections == 1
            await t.aclose()

    run(main())


def test_idle_connections_past_keepalive_expiry_are_not_reused(run: Run) -> None:
    async def main() -> None:
        async with RawServer(respond()) as server:
            t = OriginTransport(PoolLimits(keepalive_expiry_s=0.2))
            await send(t, server)
            await asyncio.sleep(0.5)
            await send(t, server)
            assert server.connections == 2
            assert t.open_connections == 1
            await t.aclose()

    run(main())


def test_slow_reader_keeps_the_origin_blocked_with_a_bounded_buffer(run: Run) -> None:
    total = 64 * 1024 * 1024
    sent = [0]
    finished = asyncio.Event()

    async def firehose(_request: Request, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % total)
        block = b"z" * 65536
        for _ in range(total // len(block)):
            writer.write(block)
            await writer.drain()
            sent[0] += len(block)
        finished.set()
        return True

    async def main() -> None:
        async with RawServer(firehose) as server:
            high_water = 256 * 1024
            t = OriginTransport(high_water=high_water)
            response = await t.request(server.key, "GET", b"/", server.authority, [], None, FAST)
            body = response.body
            received = len(await body.__anext__())
            await asyncio.sleep(1.0)  # the client stops reading
            before = sent[0]
            await asyncio.sleep(0.5)
            # The origin is blocked in drain(): nothing more got out in half a second...
            assert sent[0] == before < total
            assert not finished.is_set()
            # ...and this process holds at most the high-water mark plus one socket read.
            assert body.buffered <= high_water + 256 * 1024
            async for chunk in body:
                received += len(chunk)
            assert received == total
            assert finished.is_set()
            await t.aclose()

    run(main())


# --- httpx's side -----------------------------------------------------------------------------


def test_as_an_httpx_transport_with_streaming_timeouts_and_errors(origin: str, run: Run) -> None:
    async def main() -> None:
        transport = OriginTransport()
        async with httpx.AsyncClient(transport=transport) as client:
            r = await client.get(f"{origin}/echo/x?y=1", headers={"X-Case": "Kept"})
            assert (r.status_code, r.http_version, r.reason_phrase) == (200, "HTTP/1.1", "OK")
            doc = r.json()
            assert doc["query"] == "y=1"
            assert ["x-case", "Kept"] in doc["headers"]
            r = await client.post(f"{origin}/echo", content=b"abc")
            assert r.json()["body_size"] == 3

            async def parts() -> AsyncIterator[bytes]:
                yield b"ab"
                yield b"cd"

            r = await client.post(f"{origin}/echo", content=parts())
            assert r.json()["body_size"] == 4
            async with client.stream("GET", f"{origin}/bytes?n=300000&chunk=1000") as s:
                assert len(b"".join([c async for c in s.aiter_raw()])) == 300000
            with pytest.raises(httpx.ReadTimeout) as caught:
                await client.get(f"{origin}/sleep?s=3", timeout=httpx.Timeout(5, read=0.3))
            assert caught.value.request.url.path == "/sleep"
            assert transport.connections_made <= 2
        with pytest.raises(httpx.UnsupportedProtocol):
            await OriginTransport().handle_async_request(httpx.Request("GET", "https://example.com/"))

    run(main())


def test_shared_client_keeps_no_cookies_between_users(run: Run) -> None:
    async def set_cookie(request: Request, writer: asyncio.StreamWriter) -> bool:
        return await respond(headers="set-cookie: session=alice; Path=/\r\n")(request, writer)

    async def main() -> None:
        async with RawServer(set_cookie) as server:
            client = shared_client()
            await client.get(f"http://127.0.0.1:{server.port}/login")
            await client.get(f"http://127.0.0.1:{server.port}/other-user")
            assert [r.headers.get("cookie") for r in server.requests] == [None, None]
            assert client.origin_transport.connections_made == 1  # the http mount is the OriginTransport
            await client.aclose()

    run(main())


# --- through a gateway -------------------------------------------------------------------------


class ThreadedOrigin:
    """A raw origin in a thread of its own (the gateway runs on another loop), answering every
    request with fixed, oddly spelled headers and echoing the `cookie` it was sent."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn, conn.makefile("rb") as f:
            while True:
                lines = []
                while (line := f.readline()) not in (b"\r\n", b""):
                    lines.append(line)
                if not lines:
                    return
                cookie = next((v for v in lines if v.lower().startswith(b"cookie:")), b"-").strip()
                body = cookie
                conn.sendall(
                    b"HTTP/1.1 200 OK\r\nServer: Raw\r\nDate: Mon, 01 Jan 2001 00:00:00 GMT\r\n"
                    b"Connection: keep-alive, X-Private\r\nKeep-Alive: timeout=5\r\nX-Private: 1\r\n"
                    b"X-Thing: 1\r\nSet-Cookie: session=alice\r\nContent-Length: %d\r\n\r\n%b"
                    % (len(body), body)
                )

    def close(self) -> None:
        self.listener.close()


ONE_ORIGIN = """
[node]
data_dir = "{data_dir}"

[origins.raw]
endpoints = [{ url = "http://127.0.0.1:%d" }]

[[routes]]
name = "old"
path = "/old"
redirect = { to = "https://example.com/new", status = 301 }

[[routes]]
name = "raw"
path = "/{*rest}"
methods = ["GET"]
origin = "raw"
"""


def test_gateway_passes_origin_headers_lower_cased_hop_by_hop_stripped_one_date(gateway) -> None:
    raw = ThreadedOrigin()
    try:
        url = gateway(ONE_ORIGIN % raw.port)
        with httpx.Client() as client:
            r = client.get(f"{url}/a")
        names = [k.decode() for k, _ in r.headers.raw]
        assert r.status_code == 200
        assert names.count("date") == 1
        assert r.headers["date"] == "Mon, 01 Jan 2001 00:00:00 GMT"  # the origin's, passed on
        assert r.headers["server"] == "Raw"
        assert r.headers["x-thing"] == "1"
        assert not {"connection", "keep-alive", "x-private"} & set(names)
        assert "edgefn" in r.headers["via"]
        # A set-cookie meant for one user never goes out on another user's request.
        assert httpx.get(f"{url}/b").content == b"-"
    finally:
        raw.close()


def test_gateway_adds_exactly_one_date_to_its_own_answers(gateway) -> None:
    raw = ThreadedOrigin()
    try:
        url = gateway(ONE_ORIGIN % raw.port)
        for r in (httpx.get(f"{url}/old"), httpx.post(f"{url}/a")):
            assert r.status_code in (301, 405)
            dates = [v for k, v in r.headers.raw if k == b"date"]
            assert len(dates) == 1 and dates[0].endswith(b" GMT")
    finally:
        raw.close()
