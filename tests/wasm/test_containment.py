"""A runaway or memory-hungry guest gets its error status and slows nobody else down."""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from pathlib import Path

import httpx

from tests.servers import ServerThread
from wasm_runtime import FunctionError, FunctionTimeout, FunctionTrap, Limits, Runtime

from .conftest import arun
from .fnserver import Fn, FnApp
from .helpers import drain, invocation, request, runtime


def test_infinite_loop_gets_504_while_another_function_answers_at_normal_speed(
    components: dict[str, Path], data_dir: Path
) -> None:
    app = FnApp(
        data_dir,
        {"spin": Fn(components["spin"], Limits(timeout_s=1.5)), "hello": Fn(components["hello"])},
    )
    with ServerThread(app) as server, httpx.Client(timeout=30) as client:
        client.get(f"{server.url}/hello/warm").raise_for_status()
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            t0 = time.perf_counter()
            spin = pool.submit(client.get, f"{server.url}/spin/")
            time.sleep(0.2)  # the loop is running now
            latencies = []
            while not spin.done():
                t = time.perf_counter()
                r = client.get(f"{server.url}/hello/during")
                latencies.append(time.perf_counter() - t)
                assert r.status_code == 200
                assert r.json()["path"] == "/during"
            spin_resp = spin.result()
            spin_elapsed = time.perf_counter() - t0
    assert spin_resp.status_code == 504
    assert spin_resp.json()["error"]["code"] == "function_timeout"
    assert 1.4 < spin_elapsed < 4.0
    assert len(latencies) >= 3
    assert max(latencies) < 0.5, latencies


def test_timeout_is_a_function_timeout_at_the_limit(components: dict[str, Path], data_dir: Path) -> None:
    async def main() -> tuple[BaseException | None, float]:
        async with runtime(data_dir) as rt:
            comp = await rt.load(components["spin"])
            t0 = time.perf_counter()
            try:
                await rt.invoke(comp, request(), limits=Limits(timeout_s=0.5))
            except FunctionTimeout as exc:
                return exc, time.perf_counter() - t0
            return None, time.perf_counter() - t0

    exc, elapsed = arun(main())
    assert isinstance(exc, FunctionTimeout) and exc.status == 504
    assert 0.45 < elapsed < 3.0


def test_unbounded_allocation_is_a_5xx_and_the_runtime_keeps_serving(
    components: dict[str, Path], data_dir: Path
) -> None:
    async def main() -> tuple[BaseException | None, int, int]:
        async with runtime(data_dir) as rt:
            hog = await rt.load(components["hog"])
            hello = await rt.load(components["hello"])
            error: BaseException | None = None
            try:
                resp = await rt.invoke(hog, request("/grow"), limits=Limits(memory_mb=64, timeout_s=20))
                await drain(resp)
            except FunctionTrap as exc:
                error = exc
            ok = await rt.invoke(hog, request("/ok"), limits=Limits(memory_mb=64))
            await drain(ok)
            other = await rt.invoke(hello, request("/"), limits=Limits())
            await drain(other)
            return error, ok.status, other.status

    error, ok_status, other_status = arun(main())
    assert isinstance(error, FunctionTrap), error
    assert error.status == 502 and error.code == "function_crashed"
    assert ok_status == 200
    assert other_status == 200


def test_aclose_stops_a_runaway_guest_promptly(components: dict[str, Path], data_dir: Path) -> None:
    async def main() -> tuple[float, BaseException | None]:
        rt = Runtime(data_dir)
        comp = await rt.load(components["spin"])
        task = asyncio.ensure_future(rt.invoke(comp, request(), limits=Limits(timeout_s=60)))
        await asyncio.sleep(0.3)
        t0 = time.perf_counter()
        await rt.aclose()
        closed_in = time.perf_counter() - t0
        try:
            await task
        except FunctionError as exc:
            return closed_in, exc
        return closed_in, None

    closed_in, exc = arun(main())
    assert closed_in < 2.0
    assert isinstance(exc, FunctionError)


def test_a_cancelled_invocation_stops_a_cpu_bound_guest(components: dict[str, Path], data_dir: Path) -> None:
    async def main() -> float:
        async with runtime(data_dir) as rt:
            comp = await rt.load(components["spin"])
            task = asyncio.ensure_future(rt.invoke(comp, request(), limits=Limits(timeout_s=30)))
            await asyncio.sleep(0.3)
            assert rt.active == 1
            task.cancel()  # what the gateway does when the client disconnects before the headers
            t0 = time.perf_counter()
            while rt.active and time.perf_counter() - t0 < 10:
                await asyncio.sleep(0.02)
            return time.perf_counter() - t0

    assert arun(main()) < 1.0


def test_a_trap_after_the_client_left_is_a_cancel_not_a_crash(data_dir: Path) -> None:
    """A guest whose write fails once the client has gone often traps (`unreachable`); that is
    the client's leaving, and must not be logged and counted as a crashed function."""
    from wasmtime import WasmtimeError

    async def classify(cancelled: bool) -> FunctionError:
        rt = Runtime(data_dir)
        try:
            inv = invocation(Limits(timeout_s=30))
            if cancelled:
                inv.cancel()
            return rt._classify(
                inv, WasmtimeError("error while executing\n\nCaused by:\n    wasm trap: unreachable")
            )
        finally:
            await rt.aclose()

    crashed = arun(classify(cancelled=False))
    assert isinstance(crashed, FunctionTrap) and "unreachable" in str(crashed)
    left = arun(classify(cancelled=True))
    assert not isinstance(left, FunctionTrap) and "client went away" in str(left)
