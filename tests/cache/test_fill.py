"""Filling the cache while the first response streams: time to first byte, limits, failures, bytes."""

from __future__ import annotations

import socket
import time
from urllib.parse import urlsplit

import httpx

from tests.cache.conftest import CACHED_ROUTE, Origin, Reply


def test_first_request_streams_while_filling(edge, origin: Origin) -> None:
    origin.on(
        "/slow",
        Reply(
            headers=[("cache-control", "max-age=60")], chunks=[b"first ", b"last"], pause_s=2.0, length=False
        ),
    )
    base = edge(CACHED_ROUTE)
    started = time.monotonic()
    with httpx.stream("GET", base + "/slow", timeout=10) as response:
        assert response.headers["x-cache"] == "MISS"
        chunks = response.iter_raw()
        first = next(chunks)
        first_at = time.monotonic() - started
        rest = b"".join(chunks)
    done_at = time.monotonic() - started
    assert first == b"first "
    assert first_at < 1.0, f"first chunk after {first_at:.2f} s: the client waited for the fill"
    assert done_at >= 2.0
    assert rest == b"last"
    hit = httpx.get(base + "/slow", timeout=10)
    assert (hit.content, hit.headers["x-cache"]) == (b"first last", "HIT")
    assert origin.hits("/slow") == 1


def test_object_over_the_limit_streams_through_unstored(edge, origin: Origin) -> None:
    big = [bytes([i]) * 50_000 for i in range(4)]  # 200 kB, over 0.1 MB; no content-length
    origin.on("/big", Reply(headers=[("cache-control", "max-age=60")], chunks=big, length=False))
    origin.on("/declared", Reply(headers=[("cache-control", "max-age=60")], chunks=big))
    origin.on("/small", Reply(headers=[("cache-control", "max-age=60")], chunks=[b"x" * 50_000]))
    base = edge(CACHED_ROUTE.replace("ttl_s = 60", "ttl_s = 60, max_object_mb = 0.1"))
    for path in ("/big", "/declared"):
        for _ in range(2):
            answer = httpx.get(base + path, timeout=10)
            assert (answer.content, answer.headers["x-cache"]) == (b"".join(big), "MISS")
        assert origin.hits(path) == 2
    httpx.get(base + "/small", timeout=10)
    assert httpx.get(base + "/small", timeout=10).headers["x-cache"] == "HIT"


def test_upstream_failure_mid_body_stores_nothing(edge, origin: Origin) -> None:
    origin.on(
        "/broken",
        Reply(headers=[("cache-control", "max-age=60")], chunks=[b"a" * 1000, b"b" * 1000], fail_after=1),
    )
    base = edge(CACHED_ROUTE)
    for _ in range(2):
        try:
            with httpx.stream("GET", base + "/broken", timeout=10) as response:
                assert response.headers["x-cache"] == "MISS"
                body = b"".join(response.iter_raw())
        except httpx.HTTPError:
            body = b"cut"
        assert body != b"a" * 1000 + b"b" * 1000
    assert origin.hits("/broken") == 2


def test_client_gone_mid_body_never_leaves_a_partial_object(edge, origin: Origin) -> None:
    whole = b"A" * 20_000 + b"B" * 20_000
    origin.on(
        "/gone",
        Reply(
            headers=[("cache-control", "max-age=60")], chunks=[whole[:20_000], whole[20_000:]], pause_s=0.5
        ),
    )
    base = edge(CACHED_ROUTE)
    url = urlsplit(base)
    with socket.create_connection((url.hostname, url.port), timeout=5) as sock:
        sock.sendall(b"GET /gone HTTP/1.1\r\nhost: x\r\n\r\n")
        assert sock.recv(1024).startswith(b"HTTP/1.1 200")
    time.sleep(1.0)  # the origin's second chunk has come and gone
    again = httpx.get(base + "/gone", headers={"host": "x"}, timeout=10)
    assert again.content == whole, f"{again.headers['x-cache']} with {len(again.content)} bytes"


def test_cache_is_bounded_in_bytes_and_evicts_least_recently_used(edge, origin: Origin) -> None:
    for name in "abcd":
        origin.on(
            f"/{name}", Reply(headers=[("cache-control", "max-age=60")], chunks=[name.encode() * 300_000])
        )
    base = edge(CACHED_ROUTE, env={"EDGEFN_CACHE_MB": "1"})  # room for three 300 kB objects
    for name in "abc":
        httpx.get(f"{base}/{name}", timeout=10)
    assert httpx.get(base + "/a", timeout=10).headers["x-cache"] == "HIT"  # a is now the newest
    httpx.get(base + "/d", timeout=10)  # evicts b, the least recently used
    states = {n: httpx.get(f"{base}/{n}", timeout=10).headers["x-cache"] for n in "adc"}
    assert states == {"a": "HIT", "d": "HIT", "c": "HIT"}
    assert httpx.get(base + "/b", timeout=10).headers["x-cache"] == "MISS"
