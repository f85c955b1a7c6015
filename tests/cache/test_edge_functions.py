"""The cache between the edge functions: a viewer function runs on every request, an origin one on misses."""

from __future__ import annotations

import httpx

from tests.cache.conftest import Origin, Reply


def test_origin_function_runs_on_misses_only(edge, origin: Origin, example_components) -> None:
    origin.on("/page", Reply(headers=[("cache-control", "max-age=60")], chunks=[b"page"]))
    base = edge(
        f"""
        [functions.viewer]
        component = "{example_components["edge"]}"
        env = {{ ROLE = "viewer" }}

        [functions.originfn]
        component = "{example_components["edge"]}"
        env = {{ ROLE = "origin" }}

        [[routes]]
        name = "both"
        path = "/{{*rest}}"
        origin = "o"
        cache = {{ ttl_s = 60 }}
        edge = {{ viewer = "viewer", origin = "originfn" }}
        """
    )
    first = httpx.get(base + "/page", timeout=60)
    second = httpx.get(base + "/page", timeout=60)
    assert (first.text, second.text) == ("page", "page")
    assert (first.headers["x-cache"], second.headers["x-cache"]) == ("MISS", "HIT")
    # the viewer function ran both times; its request header reached the origin once
    assert first.headers["x-edge-viewer-response"] == second.headers["x-edge-viewer-response"] == "1"
    assert origin.hits("/page") == 1
    assert origin.last("/page")["x-edge-viewer"] == "1"
    assert origin.last("/page")["x-edge-origin"] == "1"
    # what the origin function changed on the way back is stored with the object, as Lambda@Edge does
    assert second.headers["x-edge-origin-response"] == "1"
