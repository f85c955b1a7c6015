"""Viewer and origin edge functions in the pipeline (Lambda@Edge triggers in the Workers model)."""

from __future__ import annotations

import logging
import time

import httpx
import pytest

from examples import origin as origin_module
from tests.servers import ServerThread, free_port

CONFIG = """
[node]
data_dir = "{data_dir}"
trusted_proxies = ["10.0.0.0/8"]

[origins.web]
endpoints = [{ url = "%(a)s" }, { url = "%(b)s" }]

[origins.dead]
endpoints = [{ url = "http://127.0.0.1:%(dead)d" }]

[functions.viewer]
component = "%(edge)s"
env = { ROLE = "viewer", TRY_HOST = "1" }

[functions.picker]
component = "%(edge)s"
env = { ROLE = "viewer", PICK_ORIGIN = "%(b)s" }

[functions.originfn]
component = "%(edge)s"
env = { ROLE = "origin" }

[[routes]]
name = "viewer"
path = "/v/{*rest}"
origin = "web"
rewrite = { path = "/{rest}" }
edge = { viewer = "viewer" }

[[routes]]
name = "answer"
path = "/answer/{*rest}"
origin = "dead"
edge = { viewer = "viewer" }

[[routes]]
name = "picked"
path = "/p/{*rest}"
origin = "web"
rewrite = { path = "/{rest}" }
edge = { viewer = "picker" }

[[routes]]
name = "both"
path = "/o/{*rest}"
origin = "web"
rewrite = { path = "/{rest}" }
edge = { viewer = "viewer", origin = "originfn" }

[[routes]]
name = "plain"
path = "/{*rest}"
origin = "web"
"""


@pytest.fixture(scope="module")
def second_origin():
    with ServerThread(origin_module.app) as server:
        yield server.url


@pytest.fixture
def url(origin, second_origin, gateway, example_components) -> str:
    return gateway(
        CONFIG % {"a": origin, "b": second_origin, "dead": free_port(), "edge": example_components["edge"]}
    )


def header(doc: dict, name: str) -> list[str]:
    return [v for k, v in doc["headers"] if k == name]


def test_viewer_function_changes_request_and_response(url, caplog) -> None:
    caplog.set_level(logging.WARNING, logger="edgefn.edge_functions")
    r = httpx.get(f"{url}/v/echo/x?q=1", timeout=30)
    assert r.status_code == 200, r.text
    assert r.headers["x-edge-viewer-response"] == "1"
    doc = r.json()
    assert header(doc, "x-edge-viewer") == ["1"]
    assert doc["raw_path"] == "/echo/x" and doc["query"] == "q=1"
    # the function tried to set `host`: the origin still sees the client's host
    assert header(doc, "x-forwarded-host") == [url.removeprefix("http://")]
    assert any("read-only request header 'host'" in rec.getMessage() for rec in caplog.records)


def test_viewer_function_may_answer_without_the_origin(url) -> None:
    r = httpx.get(f"{url}/answer/edge-answer", timeout=30)
    assert r.status_code == 200
    assert r.text == "answered at the edge by the viewer function\n"


def test_viewer_function_picks_the_origin_endpoint_and_clients_cannot(url, second_origin) -> None:
    b_host = second_origin.removeprefix("http://")
    r = httpx.get(f"{url}/p/echo", timeout=30)
    assert header(r.json(), "host") == [b_host]
    plain = httpx.get(f"{url}/echo", headers={"x-edgefn-origin": second_origin}, timeout=30)
    assert header(plain.json(), "host") != [b_host]
    assert not header(plain.json(), "x-edgefn-origin")


def test_origin_function_runs_after_the_viewer(url) -> None:
    r = httpx.post(f"{url}/o/echo", content=b"body through two functions", timeout=30)
    assert r.status_code == 200, r.text
    doc = r.json()
    assert header(doc, "x-edge-viewer") == ["1"]
    assert header(doc, "x-edge-origin") == ["1"]
    assert doc["body_size"] == len(b"body through two functions")
    assert r.headers["x-edge-viewer-response"] == "1"
    assert r.headers["x-edge-origin-response"] == "1"


def test_pipeline_errors_reach_the_function_as_responses(url) -> None:
    r = httpx.get(f"{url}/answer/not-answered", timeout=30)
    assert r.status_code == 502  # the dead origin's JSON error, passed back through the function
    assert r.json()["error"]["code"] == "origin_unreachable"
    assert r.headers["x-edge-viewer-response"] == "1"


def test_streaming_survives_a_viewer_function(url) -> None:
    start = time.perf_counter()
    with httpx.stream("GET", f"{url}/v/pause?first=16&wait=1.5", timeout=30) as r:
        chunks = r.iter_raw()
        first = next(chunks)
        first_at = time.perf_counter() - start
        rest = b"".join(chunks)
    assert first.startswith(b"a")
    assert first + rest == b"a" * 16 + b"b" * 16
    assert first_at < 1.0, f"first chunk after {first_at:.2f} s"
