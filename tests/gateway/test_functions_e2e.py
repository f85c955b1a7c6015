"""Functions behind routes: the runtime wired into the gateway, over real sockets."""

from __future__ import annotations

import threading
import time

import httpx
import pytest

CONFIG = """
[node]
data_dir = "{data_dir}"

[origins.web]
endpoints = [{ url = "%(origin)s" }]

[functions.hello]
component = "%(hello)s"
env = { GREETING = "hi" }

[functions.stream]
component = "%(stream)s"
timeout_s = 30
reserved_concurrency = 1

[functions.fetch]
component = "%(fetch)s"
outbound = ["web"]
env = { ORIGIN = "web" }

[functions.sneaky]
component = "%(fetch)s"
env = { ORIGIN = "127.0.0.1:%(private)d" }

[[routes]]
name = "hello"
path = "/hello/{*rest}"
function = "hello"
response_headers = { set = { "x-route" = "hello" } }

[[routes]]
name = "stream"
path = "/stream"
function = "stream"

[[routes]]
name = "fetch"
path = "/fetch/{*rest}"
function = "fetch"
rewrite = { path = "/{rest}" }

[[routes]]
name = "sneaky"
path = "/sneaky/{*rest}"
function = "sneaky"
rewrite = { path = "/{rest}" }
"""


@pytest.fixture
def url(origin, gateway, example_components) -> str:
    private = int(origin.rsplit(":", 1)[1])
    return gateway(
        CONFIG % {"origin": origin, "private": private, **{k: str(v) for k, v in example_components.items()}}
    )


def test_function_sees_the_request_and_labels_the_version(url) -> None:
    r = httpx.post(f"{url}/hello/a/b?q=1", content=b"payload", headers={"x-test": "yes"}, timeout=30)
    assert r.status_code == 200, r.text
    assert r.headers["x-edgefn-executed-version"] == "$LATEST"
    assert r.headers["x-route"] == "hello"
    assert "x-request-id" in r.headers
    doc = r.json()
    assert doc["method"] == "POST"
    assert "/hello/a/b?q=1" in doc["path"]
    assert doc["body"] == "payload"


def test_stream_chunks_reach_the_client_as_written(url) -> None:
    with httpx.Client(timeout=30) as client:
        start = time.perf_counter()
        with client.stream("GET", f"{url}/stream?n=5&ms=300") as r:
            assert r.status_code == 200
            arrivals = []
            for chunk in r.iter_raw():
                if chunk:
                    arrivals.append(time.perf_counter() - start)
    assert len(arrivals) >= 5
    assert arrivals[0] < 0.5, f"first chunk after {arrivals[0]:.2f} s"
    assert arrivals[-1] - arrivals[0] >= 1.0


def test_outbound_to_named_origin_and_refusal_of_unlisted_loopback(url) -> None:
    r = httpx.get(f"{url}/fetch/hello", timeout=30)
    assert r.status_code == 200, r.text
    assert "Hello from the origin" in r.text
    r = httpx.get(f"{url}/sneaky/hello", timeout=30)
    assert r.status_code != 200 or "Hello from the origin" not in r.text


def test_reserved_concurrency_gives_429(url) -> None:
    results: list[int] = []

    def slow() -> None:  # holds the only slot while its body streams
        with httpx.stream("GET", f"{url}/stream?n=4&ms=400", timeout=30) as r:
            results.append(r.status_code)
            r.read()

    t = threading.Thread(target=slow)
    t.start()
    time.sleep(0.5)
    r = httpx.get(f"{url}/stream?n=1", timeout=30)
    t.join()
    assert results == [200]
    assert r.status_code == 429
    assert r.headers["retry-after"]
    assert r.json()["error"]["code"] == "throttled"
