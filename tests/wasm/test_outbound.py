"""wasi:http/outgoing-handler: named origins through the transport, the policy's refusals."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.servers import ServerThread
from wasm_runtime import Limits, OutboundDenied, OutboundPolicy

from .fnserver import Fn, FnApp
from .helpers import pattern


class Origin:
    """A tiny origin that records what reached it."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, dict[str, str]]] = []
        self.bodies: list[tuple[str, bytes]] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        self.seen.append((scope["path"], headers))
        body = bytearray()
        while True:
            msg = await receive()
            body += msg.get("body", b"")
            if not msg.get("more_body"):
                break
        self.bodies.append((scope["method"], bytes(body)))
        text = f"origin saw {scope['path']}" + (f" with {len(body)} bytes" if body else "")
        await send({"type": "http.response.start", "status": 201, "headers": [(b"x-origin", b"yes")]})
        await send({"type": "http.response.body", "body": text.encode()})


@pytest.fixture(scope="module")
def origin() -> Any:
    app = Origin()
    with ServerThread(app, lifespan="off") as server:
        server.app = app  # type: ignore[attr-defined]
        yield server


def test_fetch_reaches_a_named_origin_and_rewrites_the_response(
    components: dict[str, Path], data_dir: Path, origin: Any
) -> None:
    policy = OutboundPolicy(allowed=("web",), origins=frozenset({"web"}))
    app = FnApp(data_dir, {"fetch": Fn(components["fetch"], outbound=policy)}, origins={"web": origin.url})
    with ServerThread(app) as server:
        resp = httpx.get(f"{server.url}/fetch/items/7?q=1", timeout=30)
    assert resp.status_code == 201
    assert resp.headers["x-origin"] == "yes"
    assert resp.headers["x-fetched-by"] == "edgefn-fetch"
    assert resp.content == b"fetched: origin saw /items/7"
    path, headers = origin.app.seen[-1]
    assert path == "/items/7"
    assert headers["x-from-function"] == "fetch"


@pytest.mark.parametrize("size", [3 << 20, (3 << 20) + 1, 7])
def test_a_request_body_streams_through_the_guest_to_the_origin(
    components: dict[str, Path], data_dir: Path, origin: Any, size: int
) -> None:
    """Odd sizes too: the guest writes each chunk as it read it, so a chunk of odd length read
    through the byte adapter is written straight back from where it landed."""
    payload = pattern(size)
    policy = OutboundPolicy(allowed=("web",), origins=frozenset({"web"}))
    fn = Fn(components["fetch"], Limits(timeout_s=60), outbound=policy)
    app = FnApp(data_dir, {"fetch": fn}, origins={"web": origin.url})
    with ServerThread(app) as server:
        resp = httpx.put(f"{server.url}/fetch/upload", content=payload, timeout=60)
    assert resp.status_code == 201
    assert resp.content == f"fetched: origin saw /upload with {len(payload)} bytes".encode()
    assert origin.app.bodies[-1] == ("PUT", payload)


def test_an_unlisted_loopback_port_is_refused_as_http_request_denied(
    components: dict[str, Path], data_dir: Path, origin: Any
) -> None:
    before = len(origin.app.seen)
    authority = origin.url.removeprefix("http://")
    policy = OutboundPolicy(allowed=("web",), origins=frozenset({"web"}))
    fn = Fn(components["fetch"], env={"ORIGIN": authority}, outbound=policy)
    app = FnApp(data_dir, {"fetch": fn}, origins={"web": origin.url})
    with ServerThread(app) as server:
        resp = httpx.get(f"{server.url}/fetch/secret", timeout=30)
    assert resp.status_code == 502
    assert resp.text == "outbound error: ErrorCode_HttpRequestDenied"
    assert len(origin.app.seen) == before
    assert (
        "fetch",
        "stdout",
        "fetch " + authority + "/secret failed: ErrorCode_HttpRequestDenied",
    ) in app.logs


def test_a_listed_loopback_authority_is_allowed(
    components: dict[str, Path], data_dir: Path, origin: Any
) -> None:
    authority = origin.url.removeprefix("http://")
    fn = Fn(components["fetch"], env={"ORIGIN": authority}, outbound=OutboundPolicy(allowed=(authority,)))
    app = FnApp(data_dir, {"fetch": fn})
    with ServerThread(app) as server:
        resp = httpx.get(f"{server.url}/fetch/open", timeout=30)
    assert resp.status_code == 201
    assert resp.content == b"fetched: origin saw /open"


def test_a_refused_connection_is_the_spec_error_code(components: dict[str, Path], data_dir: Path) -> None:
    from tests.servers import free_port

    dead = f"127.0.0.1:{free_port()}"
    fn = Fn(components["fetch"], env={"ORIGIN": dead}, outbound=OutboundPolicy(allowed=(dead,)))
    app = FnApp(data_dir, {"fetch": fn})
    with ServerThread(app) as server:
        resp = httpx.get(f"{server.url}/fetch/x", timeout=30)
    assert resp.status_code == 502
    assert resp.text == "outbound error: ErrorCode_ConnectionRefused"


@pytest.mark.parametrize(
    ("allowed", "authority", "verdict"),
    [
        (("web",), "web", "web"),
        ((), "web", "denied"),
        (("api.example.com",), "api.example.com", None),
        (("api.example.com",), "api.example.com:8443", None),
        (("api.example.com:443",), "api.example.com:8443", "denied"),
        (("api.example.com:443",), "api.example.com:443", None),
        (("*",), "example.org", None),
        (("*",), "127.0.0.1:8080", "denied"),
        (("*",), "10.1.2.3", "denied"),
        (("*",), "169.254.169.254", "denied"),
        (("*",), "[::1]:80", "denied"),
        (("*",), "localhost:80", "denied"),
        (("*", "127.0.0.1:8080"), "127.0.0.1:8080", None),
        (("127.0.0.1:8080",), "127.0.0.1:9090", "denied"),
        (("other.example",), "example.org", "denied"),
    ],
)
def test_outbound_policy(allowed: tuple[str, ...], authority: str, verdict: str | None) -> None:
    policy = OutboundPolicy(allowed=allowed, origins=frozenset({"web"}))
    if verdict == "denied":
        with pytest.raises(OutboundDenied):
            policy.check("http", authority)
    else:
        assert policy.check_and_resolve("http", authority) == verdict
        policy.check("https", authority)


def test_outbound_policy_refuses_other_schemes() -> None:
    with pytest.raises(OutboundDenied):
        OutboundPolicy(allowed=("*",)).check("ftp", "example.org")
