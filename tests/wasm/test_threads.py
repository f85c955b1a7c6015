"""The guest-thread cap: a request over it waits within its own timeout, then 429; never a hang."""

from __future__ import annotations

import asyncio
import textwrap
import threading
import time
from pathlib import Path

import httpx
import pytest

from gateway.app import Gateway
from gateway.errors import error_response
from routes.loader import load_config
from tests.servers import ServerThread
from wasm_runtime import FunctionThrottled, GuestResponse, Limits, Runtime
from wasm_runtime._threads import ThreadSlots

from .conftest import arun
from .helpers import drain, request

HOLD = "/?n=2&ms=60000&size=4"  # one chunk, then a pause far longer than any test


async def _first_chunk(resp: GuestResponse) -> bytes:
    return await anext(aiter(resp.body))


def test_held_streams_then_one_more_gets_throttled_within_its_timeout(
    components: dict[str, Path], data_dir: Path
) -> None:
    async def main() -> tuple[BaseException | None, dict[str, int], int, int, dict[str, int]]:
        rt = Runtime(data_dir, max_threads=3, max_threads_per_function=2)
        try:
            stream = await rt.load(components["stream"])
            hello = await rt.load(components["hello"])
            held = [await rt.invoke(stream, request(HOLD), limits=Limits(timeout_s=60)) for _ in range(2)]
            for resp in held:
                assert await _first_chunk(resp) == b"\x00\x01\x02\x03"
            late = asyncio.ensure_future(rt.invoke(stream, request("/?n=1"), limits=Limits(timeout_s=0.5)))
            await asyncio.sleep(0.1)
            seen_waiting = rt.stats()
            error: BaseException | None = None
            try:
                await late
            except FunctionThrottled as exc:
                error = exc
            # another function still has its thread
            other = await rt.invoke(hello, request("/"), limits=Limits())
            await drain(other)
            # a request that waits long enough is served once a stream ends
            patient = asyncio.ensure_future(
                rt.invoke(stream, request("/?n=1&ms=0"), limits=Limits(timeout_s=60))
            )
            await asyncio.sleep(0.2)
            assert not patient.done()
            await held[0].body.aclose()  # type: ignore[attr-defined]
            served = await patient
            await drain(served)
            await held[1].body.aclose()  # type: ignore[attr-defined]
            return error, seen_waiting, other.status, served.status, rt.stats()
        finally:
            await rt.aclose()

    error, waiting, other_status, served_status, after = arun(main())
    assert isinstance(error, FunctionThrottled), error
    assert error.status == 429 and error.code == "throttled"
    assert waiting["waiting_for_thread"] == 1 and waiting["running"] == 2
    assert other_status == 200
    assert served_status == 200
    assert after["throttled"] == 1 and after["waiting_for_thread"] == 0


def test_a_throttled_invocation_becomes_429_with_retry_after() -> None:
    resp = error_response(FunctionThrottled("no guest thread"), "rid-1")
    assert resp.status == 429
    assert (b"retry-after", b"1") in resp.headers
    assert resp.error_code == "throttled"


def test_slots_serve_waiters_in_order_among_those_that_fit() -> None:
    async def main() -> list[str]:
        slots = ThreadSlots(2, per_function=1)
        order: list[str] = []
        await slots.acquire("a", float("inf"))
        await slots.acquire("b", float("inf"))

        async def take(key: str) -> None:
            await slots.acquire(key, asyncio.get_running_loop().time() + 30)
            order.append(key)

        waiting = [asyncio.ensure_future(take(k)) for k in ("a", "a", "b")]
        await asyncio.sleep(0.05)
        assert slots.waiting == 3
        slots.release("b")  # only b fits the per-function share: a's wait on
        await asyncio.sleep(0.05)
        slots.release("a")
        await asyncio.sleep(0.05)
        assert slots.waiting == 1
        slots.close()
        results = await asyncio.gather(*waiting, return_exceptions=True)
        assert isinstance(results[1], Exception) and "shutting down" in str(results[1])
        return order

    assert arun(main()) == ["b", "a"]


def test_slot_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        ThreadSlots(0)
    with pytest.raises(ValueError, match="between 1 and 4"):
        ThreadSlots(4, per_function=5)
    assert ThreadSlots(1).per_function == 1
    assert ThreadSlots(512).per_function == 448


GATEWAY = """
[node]
data_dir = "{data_dir}"
wasm_threads = 2

[functions.one]
component = "{stream}"
timeout_s = 60

[functions.two]
component = "{stream}"
timeout_s = 60

[functions.quick]
component = "{hello}"
timeout_s = 1

[[routes]]
name = "one"
path = "/one"
function = "one"

[[routes]]
name = "two"
path = "/two"
function = "two"

[[routes]]
name = "quick"
path = "/quick"
function = "quick"
"""


def test_gateway_answers_429_over_the_thread_cap(components: dict[str, Path], tmp_path: Path) -> None:
    path = tmp_path / "edgefn.toml"
    path.write_text(
        textwrap.dedent(GATEWAY).format(
            data_dir=tmp_path / "data", stream=components["stream"], hello=components["hello"]
        )
    )
    config = load_config(path)
    assert config.node.wasm_threads == 2
    server = ServerThread(Gateway(config), date_header=False, server_header=False).start()
    held: list[int] = []

    def hold(name: str) -> None:  # a stream of two chunks 8 s apart, read to its end
        with httpx.stream("GET", f"{server.url}/{name}?n=2&ms=8000", timeout=60) as r:
            held.append(r.status_code)
            r.read()

    holders = [threading.Thread(target=hold, args=(name,)) for name in ("one", "two")]
    try:
        for t in holders:
            t.start()
        for _ in range(600):
            if len(held) == 2:
                break
            time.sleep(0.05)
        assert held == [200, 200]
        over = httpx.get(f"{server.url}/quick", timeout=30)
        for t in holders:
            t.join(60)
        after = httpx.get(f"{server.url}/quick", timeout=30)
    finally:
        server.stop()
    assert over.status_code == 429
    assert over.headers["retry-after"] == "1"
    assert over.json()["error"]["code"] == "throttled"
    assert after.status_code == 200
