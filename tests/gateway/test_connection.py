"""The public listener joins a response's head to the body write that follows it (issue #6), and
holds a head no longer than the pass of the event loop that wrote it."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from gateway.connection import JoinedHeadProtocol, JoinedHeadTransport
from tests.servers import ServerThread

LATER_S = 0.3


class _Spy:
    """The socket's own transport, recording each call that writes."""

    def __init__(self, transport: Any, calls: list[list[bytes]]) -> None:
        self._transport = transport
        self._calls = calls

    def write(self, data: bytes) -> None:
        self._calls.append([bytes(data)])
        self._transport.write(data)

    def writelines(self, parts: Any) -> None:
        parts = [bytes(p) for p in parts]
        self._calls.append(parts)
        self._transport.writelines(parts)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class _SpiedProtocol(JoinedHeadProtocol):
    calls: list[list[bytes]] = []

    def connection_made(self, transport: Any) -> None:
        super().connection_made(_Spy(transport, _SpiedProtocol.calls))


async def _app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    headers = [(b"content-type", b"text/plain")]
    if scope["path"] == "/later":
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await asyncio.sleep(LATER_S)
        await send({"type": "http.response.body", "body": b"late body"})
    elif scope["path"] == "/close":
        headers.append((b"connection", b"close"))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"bye"})
    else:
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"at once", "more_body": True})
        await send({"type": "http.response.body", "body": b"!"})


@pytest.fixture
def url() -> Iterator[str]:
    _SpiedProtocol.calls.clear()
    with ServerThread(_app, http=_SpiedProtocol) as server:
        yield server.url


def test_a_head_goes_out_with_the_body_written_after_it(url: str) -> None:
    with httpx.Client() as client:
        r = client.get(f"{url}/now")
    assert r.text == "at once!"
    (joined, rest) = _SpiedProtocol.calls
    assert len(joined) == 2 and joined[0].startswith(b"HTTP/1.1 200 OK\r\n") and b"at once" in joined[1]
    assert b"!" in rest[0]


def test_a_head_is_not_held_for_a_body_that_comes_later(url: str) -> None:
    with httpx.Client() as client:
        client.get(f"{url}/now")  # connected: the timing below is the request's alone
        t0 = time.perf_counter()
        with client.stream("GET", f"{url}/later") as r:
            head_s = time.perf_counter() - t0
            body = r.read()
        body_s = time.perf_counter() - t0
    assert head_s < LATER_S / 2, f"the head waited for the body ({head_s:.3f} s)"
    assert body == b"late body" and body_s >= LATER_S
    head, later = _SpiedProtocol.calls[2:4]
    assert head[0].startswith(b"HTTP/1.1 200 OK\r\n") and len(head) == 1
    assert b"late body" in b"".join(later)


def test_closing_the_connection_sends_the_held_head_first(url: str) -> None:
    with httpx.Client() as client:
        r = client.get(f"{url}/close")
    assert r.status_code == 200 and r.text == "bye" and r.headers["connection"] == "close"


def test_what_the_wrapper_does_not_define_is_the_transports_own() -> None:
    """A protocol may call more than uvicorn's HTTP one does (a WebSocket upgrade is handed the
    transport): those calls reach the socket's transport."""

    async def main() -> tuple[bool, tuple[int, int], tuple[int, int]]:
        loop = asyncio.get_running_loop()
        ours, theirs = socket.socketpair()
        transport, _ = await loop.connect_accepted_socket(asyncio.Protocol, ours)
        joined = JoinedHeadTransport(transport, loop)  # type: ignore[arg-type]
        try:
            joined.set_write_buffer_limits(high=4096)
            return (
                joined.can_write_eof(),
                joined.get_write_buffer_limits(),
                transport.get_write_buffer_limits(),
            )
        finally:
            transport.close()
            theirs.close()

    can_write_eof, limits, own_limits = asyncio.run(main())
    assert can_write_eof is True
    assert limits == own_limits and limits[1] == 4096
