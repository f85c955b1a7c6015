"""The epoch ticker moves only while a guest runs, and a guest's timeout still fires after it slept."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from wasm_runtime import FunctionTimeout, Limits

from .conftest import arun
from .helpers import drain, request, runtime


def test_idle_runtime_does_not_tick_and_a_loop_still_times_out(
    components: dict[str, Path], data_dir: Path
) -> None:
    async def main() -> tuple[int, int, BaseException | None, float, int]:
        async with runtime(data_dir) as rt:
            comp = await rt.load(components["spin"])
            hello = await rt.load(components["hello"])
            await drain(await rt.invoke(hello, request(), limits=Limits()))
            await asyncio.sleep(0.3)  # nothing runs: the ticker must be asleep
            before = rt.epoch_ticks
            await asyncio.sleep(0.3)
            idle_ticks = rt.epoch_ticks - before
            t0 = time.perf_counter()
            error: BaseException | None = None
            try:
                await rt.invoke(comp, request(), limits=Limits(timeout_s=0.5))
            except FunctionTimeout as exc:
                error = exc
            elapsed = time.perf_counter() - t0
            ticks_while_spinning = rt.epoch_ticks - before
            await asyncio.sleep(0.3)
            after = rt.epoch_ticks
            await asyncio.sleep(0.3)
            return idle_ticks, ticks_while_spinning, error, elapsed, rt.epoch_ticks - after

    idle_ticks, spinning_ticks, error, elapsed, idle_again = arun(main())
    assert idle_ticks == 0
    assert isinstance(error, FunctionTimeout) and error.status == 504
    assert spinning_ticks > 0
    assert elapsed >= 0.45  # the pause before it never shortens a deadline
    assert elapsed < 5.0  # generous: the loop is stopped by the ticker, not left to run
    assert idle_again == 0


def test_what_a_guest_wrote_reaches_the_loop_while_it_computes(components: dict[str, Path], data_dir: Path) -> None:
    """A guest's posts (head, chunks) are held for company, but not past HOLD_S plus a tick: one
    that answers and then computes without a host call is seen at once, not at its timeout."""

    async def main() -> tuple[float, bytes, float, BaseException | None]:
        async with runtime(data_dir) as rt:
            comp = await rt.load(components["spin"])
            t0 = time.perf_counter()
            resp = await rt.invoke(comp, request("/answer-then-spin"), limits=Limits(timeout_s=3))
            first = await resp.body.__anext__()
            seen = time.perf_counter() - t0
            error: BaseException | None = None
            try:
                await drain(resp)
            except FunctionTimeout as exc:
                error = exc
            return seen, first, time.perf_counter() - t0, error

    seen, first, ended, error = arun(main())
    assert first == b"first"
    assert seen < 1.0, f"the head and first chunk took {seen:.3f} s: held until the guest ended"
    assert ended >= 2.5 and isinstance(error, FunctionTimeout)  # it was still spinning meanwhile
