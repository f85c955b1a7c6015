"""A function's own `content-length` that its body does not match never desynchronizes a kept-alive
connection: the client gets a response cut short and the connection is closed, so bytes of one
response are never read as the start of the next (response splitting). A body that matches keeps
the connection for the next request."""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from wasm_runtime.build import ensure_built

HOSTHOG = Path(__file__).resolve().parents[1] / "wasm" / "guests" / "hosthog"

CONFIG = """
[node]
data_dir = "{data_dir}"

[functions.hosthog]
component = "%s"

[[routes]]
name = "hosthog"
path = "/{*rest}"
function = "hosthog"
"""


def _exchange(port: int, first: bytes, second: bytes) -> bytes:
    """Everything the gateway sends on one connection for two requests, the second sent after the
    first response had time to go out, until it closes or goes quiet."""
    with socket.create_connection(("127.0.0.1", port)) as conn:
        conn.settimeout(3)
        conn.sendall(first)
        time.sleep(0.5)
        with contextlib.suppress(OSError):  # closed already
            conn.sendall(second)
        data = b""
        try:
            while chunk := conn.recv(65536):
                data += chunk
        except (TimeoutError, ConnectionResetError):
            pass
        return data


@pytest.mark.parametrize("declared", [3, 100])
def test_a_body_not_matching_its_content_length_ends_the_connection(
    gateway: Callable[..., str], declared: int
) -> None:
    component = ensure_built(HOSTHOG, HOSTHOG / "hosthog.wasm")
    port = int(gateway(CONFIG % component).rsplit(":", 1)[1])
    ok = b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\n"
    data = _exchange(port, b"GET /length/%d HTTP/1.1\r\nHost: x\r\n\r\n" % declared, ok)
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ") and b"content-length: %d" % declared in head.lower()
    assert len(body) <= declared  # nothing past what was declared
    assert data.count(b"HTTP/1.1 ") == 1, data  # the second request was not answered on it

    matching = _exchange(port, b"GET /length/6 HTTP/1.1\r\nHost: x\r\n\r\n", ok)
    assert matching.count(b"HTTP/1.1 200 ") == 2 and b"a body" in matching and b"ok" in matching
