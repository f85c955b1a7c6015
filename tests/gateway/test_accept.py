"""A burst of new connections is accepted at once, however long the event loop's passes are
(issue #6): uvloop accepts one connection per pass, and a pass that runs guests inline lasts as
long as they do, so 64 connections opened together waited up to a second in the accept queue."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from typing import Any

import pytest
import uvicorn
import uvloop

from gateway.connection import JoinedHeadProtocol
from gateway.server import _Server, bind

CONNECTIONS = 40
PASS_S = 0.02  # each pass of the loop works this long, as one running twenty hellos inline


async def _ok(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})


class _BusyNode:
    """`_Server` on uvloop in a thread of its own, each pass of its loop kept busy for PASS_S."""

    def __init__(self, accept_bursts: bool = True) -> None:
        self.listener = bind("127.0.0.1:0")
        self.port = self.listener.getsockname()[1]
        self.server = _Server(
            uvicorn.Config(_ok, http=JoinedHeadProtocol, lifespan="off", log_config=None, access_log=False),
            accept_bursts=accept_bursts,
        )
        self.loop = uvloop.new_event_loop()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self.server.serve(sockets=[self.listener]))

    def _busy(self) -> None:
        if not self.server.should_exit:
            time.sleep(PASS_S)
            self.loop.call_soon(self._busy)

    def __enter__(self) -> _BusyNode:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.01)
        self.loop.call_soon_threadsafe(self._busy)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.listener.close()

    @property
    def connections(self) -> int:
        return len(self.server.server_state.connections)


@pytest.fixture
def node() -> Any:
    with _BusyNode() as started:
        yield started


def _burst(node: _BusyNode) -> int:
    """Connections accepted within six passes of a burst of CONNECTIONS (each then served)."""
    clients = [socket.create_connection(("127.0.0.1", node.port)) for _ in range(CONNECTIONS)]
    try:
        deadline = time.monotonic() + 6 * PASS_S + 0.2  # one accept a pass would take 40 passes
        while node.connections < CONNECTIONS and time.monotonic() < deadline:
            time.sleep(0.005)
        accepted = node.connections
        for client in clients:
            client.sendall(b"GET / HTTP/1.1\r\nhost: t\r\n\r\n")
        assert all(client.recv(1024).startswith(b"HTTP/1.1 204 ") for client in clients)
    finally:
        for client in clients:
            client.close()
    return accepted


def test_a_burst_of_connections_is_accepted_within_a_few_passes(node: _BusyNode) -> None:
    assert _burst(node) == CONNECTIONS


def test_a_worker_sharing_its_socket_takes_one_connection_a_pass() -> None:
    """Worker processes sharing a socket keep uvloop's one a pass, which spreads a burst of
    keep-alive connections between them."""
    with _BusyNode(accept_bursts=False) as shared:
        assert _burst(shared) < CONNECTIONS // 2


def test_no_connection_is_taken_once_the_server_stops(node: _BusyNode) -> None:
    first = socket.create_connection(("127.0.0.1", node.port))
    first.sendall(b"GET / HTTP/1.1\r\nhost: t\r\n\r\n")
    assert first.recv(1024).startswith(b"HTTP/1.1 204 ")
    first.close()
    node.__exit__()
    with pytest.raises(ConnectionRefusedError):  # no descriptor of the listener left open
        socket.create_connection(("127.0.0.1", node.port), timeout=1)


def test_an_accept_refused_for_want_of_descriptors_pauses_then_goes_on(monkeypatch: pytest.MonkeyPatch) -> None:
    """EMFILE leaves the socket readable: the Acceptor stops watching it for a moment instead of
    spinning on it, then takes the connection."""
    import errno

    from gateway.connection import ACCEPT_PAUSE_S, Acceptor

    made: list[asyncio.BaseTransport] = []

    class Counting(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            made.append(transport)

    real_accept = socket.socket.accept
    refusals = [OSError(errno.EMFILE, "Too many open files")]
    calls = []

    def accept(sock: socket.socket) -> tuple[socket.socket, Any]:
        calls.append(time.monotonic())
        if refusals:
            raise refusals.pop()
        return real_accept(sock)

    monkeypatch.setattr(socket.socket, "accept", accept)
    listener = bind("127.0.0.1:0")
    loop = uvloop.new_event_loop()
    acceptor = Acceptor(listener, Counting, loop)
    client = socket.create_connection(("127.0.0.1", listener.getsockname()[1]))
    try:
        loop.run_until_complete(asyncio.sleep(ACCEPT_PAUSE_S / 2))
        paused = (len(made), len(calls))
        loop.run_until_complete(asyncio.sleep(ACCEPT_PAUSE_S))
        assert paused == (0, 1)  # refused once, and not asked again while paused
        assert len(made) == 1
    finally:
        client.close()
        acceptor.close()
        for transport in made:
            transport.close()
        loop.run_until_complete(asyncio.sleep(0))
        loop.close()
        listener.close()
