"""A client that leaves mid-body stops the work behind it: the origin read, or the guest.

uvicorn silently drops what is sent after a disconnect, so without a watch on the client the
gateway would keep pulling a slow body to its end (here: 30 s from the origin, 600 s from the
guest, cut only by its 60 s timeout).
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from gateway.app import Gateway
from routes import load_config
from tests.gateway.conftest import shared_data_dir
from tests.servers import ServerThread

CONFIG = """
[node]
data_dir = "{data_dir}"

[origins.web]
endpoints = [{{ url = "{origin}" }}]
timeouts = {{ read_s = 60 }}

[functions.stream]
component = "{stream}"
timeout_s = 60

[[routes]]
name = "web"
path = "/web/{{*rest}}"
origin = "web"
rewrite = {{ path = "/{{rest}}" }}

[[routes]]
name = "stream"
path = "/stream"
function = "stream"
"""


@pytest.fixture
def node(tmp_path: Path, origin: str, example_components: dict[str, Path]) -> Iterator[tuple[Gateway, str]]:
    data_dir = shared_data_dir(tmp_path / "data")
    path = tmp_path / "edgefn.toml"
    path.write_text(CONFIG.format(data_dir=data_dir, origin=origin, stream=example_components["stream"]))
    gateway = Gateway(load_config(path))
    with ServerThread(gateway) as server:
        yield gateway, server.url


def read_first_chunk_and_leave(url: str, path: str) -> bytes:
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nhost: {parts.netloc}\r\n\r\n".encode())
        received = b""
        while b"\r\n\r\n" not in received or len(received.split(b"\r\n\r\n", 1)[1]) < 8:
            data = sock.recv(65536)
            assert data, f"connection closed early: {received!r}"
            received += data
    return received


def wait_for(condition, what: str, timeout_s: float = 8.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"still {what} {timeout_s} s after the client left"
        time.sleep(0.05)


def test_leaving_a_slow_proxied_body_frees_the_request(node: tuple[Gateway, str]) -> None:
    gateway, url = node
    head = read_first_chunk_and_leave(url, "/web/pause?first=16&wait=30")
    assert head.startswith(b"HTTP/1.1 200")

    def served() -> bool:
        return gateway.metrics.registry.get_sample_value("edgefn_requests_in_flight") == 0

    wait_for(served, "serving the request")
    # and the gateway goes on serving
    assert httpx.get(url + "/web/hello", timeout=30).status_code == 200


def test_leaving_a_guest_stream_stops_the_guest(node: tuple[Gateway, str]) -> None:
    gateway, url = node
    head = read_first_chunk_and_leave(url, "/stream?n=600&ms=1000&size=16")
    assert head.startswith(b"HTTP/1.1 200")
    assert gateway.runtime is not None

    def stopped() -> bool:
        return gateway.runtime.stats()["running"] == 0  # type: ignore[union-attr]

    wait_for(stopped, "running the guest")
    assert gateway.metrics.registry.get_sample_value("edgefn_requests_in_flight") == 0
