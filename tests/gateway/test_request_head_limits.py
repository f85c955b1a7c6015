"""A request's head is bounded in size and in time (gateway/connection.py): past the bound a
client gets DESIGN.md's JSON error (431, 408) and the connection is closed, and what httptools
cannot parse gets the JSON 400. Before, one connection could make a worker keep 300 MiB of
headers, and a connection that sent nothing was held for ever."""

from __future__ import annotations

import json
import select
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.connection import JoinedHeadProtocol
from tests.servers import ServerThread, free_port

from .test_cli_and_server import EDGEFN, _children, _wait_until, write

LIMIT = 4096
TIMEOUT_S = 0.5


async def _app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    headers = [(b"content-type", b"text/plain"), (b"content-length", b"6")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b"served"})


@pytest.fixture(scope="module")
def port() -> Iterator[int]:
    with ServerThread(_app, http=JoinedHeadProtocol.bounded(LIMIT, TIMEOUT_S)) as server:
        yield server.port


def _answer(conn: socket.socket) -> tuple[int, dict[bytes, bytes], bytes]:
    """Status, headers and body of one response, read until the server closes or the body ends."""
    conn.settimeout(10)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        assert chunk, f"closed before a whole head: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.split(b"\r\n")
    fields = {k.strip().lower(): v.strip() for k, _, v in (line.partition(b":") for line in lines)}
    while len(body) < int(fields.get(b"content-length", b"0")):
        chunk = conn.recv(65536)
        assert chunk, "closed inside the body"
        body += chunk
    return int(status_line.split()[1]), fields, body


def _closed(conn: socket.socket) -> bool:
    conn.settimeout(5)
    try:
        return conn.recv(1) == b""
    except ConnectionResetError:
        return True


def _error(status: int, fields: dict[bytes, bytes], body: bytes, expected: int, code: str) -> dict[str, Any]:
    assert status == expected, body
    assert fields[b"content-type"] == b"application/json"
    assert fields[b"connection"] == b"close"
    error = json.loads(body)["error"]
    assert error["code"] == code
    assert error["request_id"] == fields[b"x-request-id"].decode()
    return error


def _request(port: int, head: bytes) -> tuple[int, dict[bytes, bytes], bytes, bool]:
    with socket.create_connection(("127.0.0.1", port)) as conn:
        conn.sendall(head)
        status, fields, body = _answer(conn)
        return status, fields, body, _closed(conn) if status != 200 else False


def test_a_head_within_the_bound_is_served(port: int) -> None:
    head = b"GET / HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * (LIMIT - 100) + b"\r\n\r\n"
    assert len(head) < LIMIT
    status, _, body, _ = _request(port, head)
    assert (status, body) == (200, b"served")


@pytest.mark.parametrize(
    "head",
    [
        b"GET / HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * LIMIT + b"\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(LIMIT // 8)) + b"\r\n",
        b"GET /" + b"a" * LIMIT + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    ],
    ids=["one-long-header", "many-headers", "long-url"],
)
def test_a_whole_head_over_the_bound_gets_431_and_the_connection_closes(port: int, head: bytes) -> None:
    status, fields, body, closed = _request(port, head)
    error = _error(status, fields, body, 431, "request_header_fields_too_large")
    assert str(LIMIT) in error["message"]
    assert closed


def test_a_head_over_the_bound_that_ends_in_a_later_chunk_gets_431(port: int) -> None:
    """Most of the head first (under the bound), then its end: the whole is over the bound."""
    with socket.create_connection(("127.0.0.1", port)) as conn:
        conn.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * (LIMIT - 200))
        time.sleep(0.1)  # a chunk of its own
        conn.sendall(b"a" * 400 + b"\r\n\r\n")
        status, fields, body = _answer(conn)
        _error(status, fields, body, 431, "request_header_fields_too_large")
        assert _closed(conn)


def test_a_head_that_never_ends_is_refused_once_the_bound_has_arrived(port: int) -> None:
    """A client streaming one endless header hears 431 after about the bound, not at its end."""
    with socket.create_connection(("127.0.0.1", port)) as conn:
        conn.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Endless: ")
        sent = 0
        piece = b"a" * 512
        while not select.select([conn], [], [], 0.01)[0]:
            assert sent < 64 * LIMIT, "no answer while the head kept growing"
            conn.sendall(piece)
            sent += len(piece)
        status, fields, body = _answer(conn)
        _error(status, fields, body, 431, "request_header_fields_too_large")
        assert _closed(conn)
    assert LIMIT - 512 <= sent <= 2 * LIMIT


def test_what_is_not_http_gets_the_json_400(port: int) -> None:
    status, fields, body, closed = _request(port, b"NOT HTTP AT ALL\r\n\r\n")
    _error(status, fields, body, 400, "bad_request")
    assert closed


@pytest.mark.parametrize(
    "sent", [b"GET / HT", b"GET / HTTP/1.1\r\nHost: x\r\n"], ids=["half-a-line", "no-end"]
)
def test_a_head_not_complete_in_time_gets_408_and_the_connection_closes(port: int, sent: bytes) -> None:
    with socket.create_connection(("127.0.0.1", port)) as conn:
        start = time.monotonic()
        conn.sendall(sent)
        status, fields, body = _answer(conn)
        waited = time.monotonic() - start
        _error(status, fields, body, 408, "request_timeout")
        assert _closed(conn)
    assert TIMEOUT_S * 0.9 <= waited < TIMEOUT_S + 2


def test_a_connection_that_sends_nothing_is_closed_in_time_without_an_answer(port: int) -> None:
    """As nginx and uvicorn's keep-alive timeout do: an unasked 408 could cross a request just sent."""
    with socket.create_connection(("127.0.0.1", port)) as conn:
        start = time.monotonic()
        conn.settimeout(TIMEOUT_S + 3)
        assert conn.recv(100) == b""
        waited = time.monotonic() - start
    assert TIMEOUT_S * 0.9 <= waited < TIMEOUT_S + 2


def test_the_time_bound_is_per_head_not_per_connection(port: int) -> None:
    """A slow head that completes in time is served, and a kept-alive connection idle for longer
    than the head bound between requests is left to uvicorn's keep-alive timeout."""
    with socket.create_connection(("127.0.0.1", port)) as conn:
        for part in (b"GET / HTTP/1.1\r\n", b"Host: x\r\n", b"\r\n"):
            conn.sendall(part)
            time.sleep(TIMEOUT_S / 4)
        assert _answer(conn)[0] == 200
        time.sleep(TIMEOUT_S * 1.6)
        conn.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        status, _, body = _answer(conn)
        assert (status, body) == (200, b"served")


def test_a_node_takes_its_bounds_from_the_config_and_keeps_its_memory(tmp_path: Path) -> None:
    """`edgefn serve` with `[node] max_request_head_bytes` and `request_head_timeout_s`: a head over
    the bound is refused early, whatever the client goes on sending, and the node's memory does not
    grow with what was sent (uvicorn alone kept all of it); a bad value names the file and key."""
    port = free_port()
    path = write(
        tmp_path,
        f"""
[node]
listen = "127.0.0.1:{port}"
admin_listen = "127.0.0.1:{free_port()}"
data_dir = "{tmp_path / "data"}"
max_request_head_bytes = 2048
request_head_timeout_s = 1

[[routes]]
name = "home"
path = "/"
redirect = {{ to = "/elsewhere", status = 308 }}
""",
    )
    proc = subprocess.Popen(
        [*EDGEFN, "serve", "--config", str(path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        _wait_until(lambda: proc.poll() is None and _answers(f"http://127.0.0.1:{port}/") == 308, 30)
        rss_before = _rss_kib(proc.pid)
        refused = 0
        for _ in range(20):  # 20 connections each offering 8 MiB of one header
            with socket.create_connection(("127.0.0.1", port)) as conn:
                conn.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: ")
                try:
                    for _ in range(8):
                        conn.sendall(b"a" * (1 << 20))
                except OSError:  # refused and closed while we were still sending
                    pass
                try:
                    status = _answer(conn)[0]
                except (OSError, AssertionError):
                    status = 0  # the reset of the close overtook the answer
                refused += status == 431
        assert refused >= 10
        assert _rss_kib(proc.pid) - rss_before < 32 * 1024, "the node kept what it refused"
        status, fields, body, _ = _request(
            port, b"GET / HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 2100 + b"\r\n\r\n"
        )
        _error(status, fields, body, 431, "request_header_fields_too_large")
        with socket.create_connection(("127.0.0.1", port)) as conn:
            conn.sendall(b"GET / HTTP/1.1\r\n")
            status, fields, body = _answer(conn)
            _error(status, fields, body, 408, "request_timeout")
        assert httpx.get(f"http://127.0.0.1:{port}/").status_code == 308
    finally:
        proc.kill()
        proc.wait()
    bad = write(
        tmp_path, '[node]\nmax_request_head_bytes = 10\nrequest_head_timeout_s = "soon"\n', "bad.toml"
    )
    run = subprocess.run([*EDGEFN, "check", "--config", str(bad)], capture_output=True, text=True)
    assert run.returncode == 2
    assert f"{bad}: node.max_request_head_bytes:" in run.stderr, run.stderr
    assert f"{bad}: node.request_head_timeout_s:" in run.stderr, run.stderr


def _rss_kib(pid: int) -> int:
    """The resident memory of the node and its workers."""
    total = 0
    for p in [pid, *_children(pid)]:
        status = Path(f"/proc/{p}/status").read_text()
        total += int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:")))
    return total


def _answers(url: str) -> int:
    try:
        return httpx.get(url).status_code
    except httpx.TransportError:
        return 0
