"""The origin proxy through a real gateway and a real origin, over loopback sockets."""

from __future__ import annotations

import hashlib
import json
import socket
import time

import httpx

from examples.origin import pattern
from tests.servers import free_port

ORIGIN_ROUTE = """
[node]
data_dir = "{data_dir}"
trusted_proxies = [%(trusted)s]

[origins.web]
endpoints = [%(endpoints)s]
timeouts = { connect_s = 1, read_s = %(read_s)s }

[[routes]]
name = "web"
path = "/web/{*rest}"
methods = ["GET", "POST", "PUT"]
origin = "web"
rewrite = { path = "/{rest}" }
request_headers = { set = { "x-edge" = "1" }, append = { "x-tag" = "edge" }, remove = ["cookie"] }
response_headers = { set = { "strict-transport-security" = "max-age=63072000" }, remove = ["content-type"] }

[[routes]]
name = "old"
path = "/old/{section}/{*rest}"
redirect = { to = "https://example.com/{section}/new/{rest}", status = 301 }
"""


def config(
    origin: str, *, trusted: str = '"10.0.0.0/8"', endpoints: list[str] | None = None, read_s: float = 5
) -> str:
    eps = ", ".join(f'{{ url = "{u}" }}' for u in (endpoints or [origin]))
    return ORIGIN_ROUTE % {"trusted": trusted, "endpoints": eps, "read_s": read_s}


def test_forwarded_request_is_rewritten_and_streamed(origin, gateway) -> None:
    url = gateway(config(origin))
    r = httpx.get(
        f"{url}/web/echo/a%20b?x=1&y=%2F&x=2",
        headers={"cookie": "secret", "x-tag": "client", "x-forwarded-for": "6.6.6.6"},
    )
    assert r.status_code == 200
    doc = r.json()
    assert doc["raw_path"] == "/echo/a%20b"
    assert doc["query"] == "x=1&y=%2F&x=2"  # passed through byte for byte
    headers = doc["headers"]
    names = [k for k, _ in headers]
    assert "cookie" not in names
    assert ["x-edge", "1"] in headers
    assert [v for k, v in headers if k == "x-tag"] == ["client", "edge"]
    # 127.0.0.1 is not a trusted proxy in this config, so the client's own x-forwarded-for is dropped
    assert [v for k, v in headers if k == "x-forwarded-for"] == ["127.0.0.1"]
    assert ["x-forwarded-proto", "http"] in headers
    assert [v for k, v in headers if k == "x-forwarded-host"] == [url.removeprefix("http://")]
    assert any(k == "via" and "edgefn" in v for k, v in headers)
    # response rewrite: set and remove
    assert r.headers["strict-transport-security"] == "max-age=63072000"
    assert "content-type" not in r.headers
    assert len(r.headers["x-request-id"]) >= 16


def test_trusted_proxy_keeps_forwarded_for_and_request_id(origin, gateway) -> None:
    url = gateway(config(origin, trusted='"127.0.0.1/32"'))
    r = httpx.get(f"{url}/web/echo", headers={"x-forwarded-for": "203.0.113.7", "x-request-id": "abc-123"})
    headers = r.json()["headers"]
    assert [v for k, v in headers if k == "x-forwarded-for"] == ["203.0.113.7, 127.0.0.1"]
    assert r.headers["x-request-id"] == "abc-123"
    assert ["x-request-id", "abc-123"] in headers


def test_untrusted_client_cannot_set_request_id_or_node_headers(origin, gateway) -> None:
    url = gateway(config(origin))
    r = httpx.get(
        f"{url}/web/echo",
        headers={"x-request-id": "forged", "x-edgefn-node": "evil", "x-edgefn-viewer-country": "XX"},
    )
    assert r.headers["x-request-id"] != "forged"
    headers = r.json()["headers"]
    assert [v for k, v in headers if k == "x-edgefn-node"] == ["edge-1"]
    assert not [v for k, v in headers if k == "x-edgefn-viewer-country"]


def test_hop_by_hop_headers_are_not_forwarded(origin, gateway) -> None:
    url = gateway(config(origin))
    port = int(url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(
            b"GET /web/echo HTTP/1.1\r\nHost: x\r\nConnection: close, x-private\r\n"
            b"X-Private: 1\r\nTE: trailers\r\nKeep-Alive: timeout=5\r\nX-Kept: yes\r\n\r\n"
        )
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, body_bytes = data.split(b"\r\n\r\n", 1)
    assert b"content-length" in head.lower()
    body = json.loads(body_bytes)
    names = {k for k, _ in body["headers"]}
    assert "x-kept" in names
    assert not names & {"x-private", "te", "keep-alive"}
    assert "connection" not in names or ["connection", "keep-alive"] in body["headers"]


def test_first_chunk_arrives_before_the_origin_finishes(origin, gateway) -> None:
    url = gateway(config(origin))
    with httpx.Client(timeout=10) as client:
        start = time.perf_counter()
        with client.stream("GET", f"{url}/web/pause?first=16&wait=2") as r:
            chunks = r.iter_raw()
            first = next(chunks)
            first_at = time.perf_counter() - start
            rest = b"".join(chunks)
            total = time.perf_counter() - start
    assert first == b"a" * 16
    assert rest == b"b" * 16
    assert first_at < 1.0, f"first body byte after {first_at:.2f} s"
    assert total >= 1.9


def test_50_mb_download_is_byte_exact(origin, gateway) -> None:
    url = gateway(config(origin))
    n = 50 * 1024 * 1024
    digest = hashlib.sha256()
    size = 0
    with httpx.Client(timeout=60) as client, client.stream("GET", f"{url}/web/bytes?n={n}") as r:
        assert r.status_code == 200
        for chunk in r.iter_raw():
            digest.update(chunk)
            size += len(chunk)
    assert size == n
    assert digest.hexdigest() == hashlib.sha256(pattern(n)).hexdigest()


def test_5_mb_streamed_upload_is_byte_exact(origin, gateway) -> None:
    url = gateway(config(origin))
    data = pattern(5 * 1024 * 1024 + 17)

    def chunks():  # no content-length: the gateway must stream a chunked upload through
        for i in range(0, len(data), 100_000):
            yield data[i : i + 100_000]

    r = httpx.post(f"{url}/web/echo", content=chunks(), timeout=60)
    assert r.status_code == 200
    doc = r.json()
    assert doc["body_size"] == len(data)
    assert doc["body_sha256"] == hashlib.sha256(data).hexdigest()


def test_unreachable_origin_is_502_json(origin, gateway) -> None:
    url = gateway(config(origin, endpoints=[f"http://127.0.0.1:{free_port()}"]))
    r = httpx.get(f"{url}/web/echo")
    assert r.status_code == 502
    error = r.json()["error"]
    assert error["code"] == "origin_unreachable"
    assert error["request_id"] == r.headers["x-request-id"]


def test_slow_origin_is_504_json(origin, gateway) -> None:
    url = gateway(config(origin, read_s=0.5))
    r = httpx.get(f"{url}/web/sleep?s=3", timeout=10)
    assert r.status_code == 504
    assert r.json()["error"]["code"] == "origin_timeout"


def test_connect_failure_moves_to_next_endpoint_for_idempotent_requests_only(origin, gateway) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    url = gateway(config(origin, endpoints=[dead, origin]))
    assert httpx.get(f"{url}/web/echo").status_code == 200
    assert httpx.put(f"{url}/web/echo", content=b"x").status_code == 200
    # the dead endpoint is now ejected for a while, so move it back to the front with a fresh gateway
    url2 = gateway(config(origin, endpoints=[dead, origin]))
    r = httpx.post(f"{url2}/web/echo", content=b"payload")
    assert r.status_code == 502


def test_redirect_renders_params_and_keeps_query(origin, gateway) -> None:
    url = gateway(config(origin))
    r = httpx.get(f"{url}/old/docs/a/b.html?lang=en")
    assert r.status_code == 301
    assert r.headers["location"] == "https://example.com/docs/new/a/b.html?lang=en"


def test_no_route_and_wrong_method(origin, gateway) -> None:
    url = gateway(config(origin))
    r = httpx.get(f"{url}/nowhere")
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "no_route"
    r = httpx.delete(f"{url}/web/echo")
    assert r.status_code == 405
    assert r.json()["error"]["code"] == "method_not_allowed"
    assert set(r.headers["allow"].replace(" ", "").split(",")) >= {"GET", "POST", "PUT"}
