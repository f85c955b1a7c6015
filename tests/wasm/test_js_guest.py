"""A guest from another toolchain: componentize-js (wasi@0.2.10, fetch-event, one request per
instance). Skipped where node/npm are missing."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from wasm_runtime import Limits

from .conftest import GUESTS, arun
from .helpers import chunks, request, runtime
from .jsbuild import available, ensure_js_built

pytestmark = pytest.mark.skipif(not available(), reason="node and npm are needed to build the JS guest")


@pytest.fixture(scope="module")
def js_wasm() -> Path:
    return ensure_js_built(GUESTS / "js" / "app.js", GUESTS / "js" / "js.wasm")


def test_js_guest_echoes_and_falls_back_to_fresh_instances(js_wasm: Path, data_dir: Path) -> None:
    async def main() -> tuple[str, list[tuple[dict, bool, int]], bool]:
        async with runtime(data_dir) as rt:
            comp = await rt.load(js_wasm)
            seen = []
            for i in range(3):
                req = request(f"/e?i={i}", "POST", [("x-test", b"t")], chunks(b"js ", str(i).encode()))
                resp = await rt.invoke(comp, req, limits=Limits(instance_reuse=5))
                echo = json.loads(b"".join([c async for c in resp.body]))
                seen.append((echo, resp.stats.fresh_instance, resp.stats.max_memory_bytes))
            return comp.handler, seen, comp.reuse_ok

    handler, seen, reuse_ok = arun(main())
    assert handler == "wasi:http/incoming-handler@0.2.10"
    for i, (echo, _fresh, memory) in enumerate(seen):
        assert echo == {"method": "POST", "path": f"/e?i={i}", "body": f"js {i}", "test": "t"}
        assert 1 << 20 <= memory <= 128 << 20  # StarlingMonkey's memory, through the probe
    assert reuse_ok is False


def test_js_guest_streams_with_timers(js_wasm: Path, data_dir: Path) -> None:
    async def main() -> list[tuple[float, bytes]]:
        async with runtime(data_dir) as rt:
            comp = await rt.load(js_wasm)
            resp = await rt.invoke(comp, request("/stream"), limits=Limits())
            t0 = time.perf_counter()
            return [(time.perf_counter() - t0, c) async for c in resp.body]

    arrivals = arun(main())
    assert [c for _, c in arrivals] == [f"chunk {i}\n".encode() for i in range(5)]
    assert arrivals[0][0] < 0.15
    assert arrivals[-1][0] > 0.6
