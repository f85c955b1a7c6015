"""The run gate: at most `max_executing` guests execute at once, but a guest waiting in a host call
(a held stream) or computing for long never keeps the others out."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from wasm_runtime import FunctionFailed, FunctionTimeout, FunctionTrap, GuestResponse, Limits, Runtime
from wasm_runtime._gate import RunGate, Start

from .conftest import arun
from .helpers import drain, request

HOLD = "/?n=2&ms=60000&size=4"  # one chunk, then a pause far longer than any test


def test_held_streams_give_their_place_up_while_they_wait(
    components: dict[str, Path], data_dir: Path
) -> None:
    async def main() -> tuple[dict[str, int], int, dict[str, int]]:
        rt = Runtime(data_dir, max_executing=1)
        try:
            stream = await rt.load(components["stream"])
            hello = await rt.load(components["hello"])
            held: list[GuestResponse] = []
            for _ in range(3):
                resp = await rt.invoke(stream, request(HOLD), limits=Limits(timeout_s=60))
                assert await anext(aiter(resp.body)) == b"\x00\x01\x02\x03"
                held.append(resp)
            while rt.gate.executing:  # the last one is between its first chunk and its pause
                await asyncio.sleep(0.01)
            while_held = rt.stats()
            other = await rt.invoke(hello, request("/"), limits=Limits(timeout_s=30))
            await drain(other)
            for resp in held:
                await resp.body.aclose()  # type: ignore[attr-defined]
            return while_held, other.status, rt.stats()
        finally:
            await rt.aclose()

    while_held, status, after = arun(main())
    assert while_held["running"] == 3 and while_held["executing"] == 0
    assert status == 200
    assert after["waiting_to_execute"] == 0


def test_a_long_computation_lets_a_waiting_guest_run(components: dict[str, Path], data_dir: Path) -> None:
    async def main() -> tuple[bool, int, BaseException | None, int]:
        rt = Runtime(data_dir, max_executing=1)
        try:
            spin = await rt.load(components["spin"])
            hello = await rt.load(components["hello"])
            spinning = asyncio.ensure_future(rt.invoke(spin, request("/"), limits=Limits(timeout_s=8)))
            while rt.gate.executing == 0:  # the loop has the only place now
                await asyncio.sleep(0.01)
            other = await rt.invoke(hello, request("/"), limits=Limits(timeout_s=30))
            await drain(other)
            spin_still_running = not spinning.done()
            error: BaseException | None = None
            try:
                await spinning
            except FunctionTimeout as exc:
                error = exc
            return spin_still_running, other.status, error, rt.gate.peak
        finally:
            await rt.aclose()

    spin_still_running, status, error, peak = arun(main())
    assert status == 200
    assert spin_still_running  # hello did not wait for the loop's timeout
    assert isinstance(error, FunctionTimeout)
    assert peak == 1


def test_many_concurrent_invocations_never_execute_more_than_the_gate(
    components: dict[str, Path], data_dir: Path
) -> None:
    async def main() -> tuple[list[int], int]:
        rt = Runtime(data_dir, max_executing=2)
        try:
            hello = await rt.load(components["hello"])

            async def one() -> int:  # fresh instances: reused ones would run on the loop, one at a time
                resp = await rt.invoke(hello, request("/"), limits=Limits(instance_reuse=0, timeout_s=60))
                await drain(resp)
                return resp.status

            statuses = list(await asyncio.gather(*(one() for _ in range(16))))
            return statuses, rt.gate.peak
        finally:
            await rt.aclose()

    statuses, peak = arun(main())
    assert statuses == [200] * 16
    assert peak == 2


def _guest_threads() -> int:
    return sum(1 for t in threading.enumerate() if t.name.startswith("wasm_"))


def test_guests_in_line_hold_no_thread_and_follow_on_the_finished_ones(
    components: dict[str, Path], data_dir: Path
) -> None:
    """64 invocations at once, one place: those in line wait without a thread, and a guest that
    finishes carries the next on its own thread (a thread each, as before, meant 64 threads
    queued in the gate, each woken in turn to fight for the GIL)."""

    async def main() -> tuple[list[int], int, int, int]:
        rt = Runtime(data_dir, max_executing=1)
        try:
            hello = await rt.load(components["hello"])
            limits = Limits(instance_reuse=100, timeout_s=60)
            pool = rt.warm_pool(hello, limits)
            seen = 0

            async def one() -> int:
                nonlocal seen
                resp = await rt.invoke(hello, request("/"), limits=limits, pool=pool)
                seen = max(seen, _guest_threads())
                await drain(resp)
                return resp.status

            statuses = list(await asyncio.gather(*(one() for _ in range(64))))
            return statuses, seen, rt.gate.peak, rt.stats()["guest_threads"]
        finally:
            await rt.aclose()

    statuses, threads, peak, made = arun(main())
    assert statuses == [200] * 64
    assert peak == 1
    # one carries them all; a guest that runs past an epoch check (20 ms, a loaded machine) hands
    # its place to the next on a thread of its own, so a few more may be made, never one each
    assert threads <= 8 and made <= 8, f"{threads} guest threads alive, {made} made, for one place"


def _hold_the_place(rt: Runtime) -> Start:
    """Take the gate's only place as a guest would, and keep it."""
    placeholder = Start(_Holder(), lambda: None, lambda error: None)  # type: ignore[arg-type]
    assert rt.gate.admit(placeholder)
    return placeholder


class _Holder:
    in_gate = False


def test_an_invocation_in_line_times_out_within_its_deadline(
    components: dict[str, Path], data_dir: Path
) -> None:
    async def main() -> tuple[BaseException | None, float, dict[str, int]]:
        rt = Runtime(data_dir, max_executing=1)
        try:
            hello = await rt.load(components["hello"])
            _hold_the_place(rt)
            t0 = time.perf_counter()
            error: BaseException | None = None
            try:
                await rt.invoke(hello, request("/"), limits=Limits(timeout_s=0.3))
            except FunctionTimeout as exc:
                error = exc
            return error, time.perf_counter() - t0, rt.stats()
        finally:
            await rt.aclose()

    error, elapsed, stats = arun(main())
    assert isinstance(error, FunctionTimeout)
    assert 0.25 < elapsed < 2.0
    assert stats["waiting_to_execute"] == 0 and stats["running"] == 0  # out of line, slot given back


def test_an_invocation_whose_caller_leaves_is_taken_out_of_line(
    components: dict[str, Path], data_dir: Path
) -> None:
    async def main() -> tuple[dict[str, int], dict[str, int]]:
        rt = Runtime(data_dir, max_executing=1)
        try:
            hello = await rt.load(components["hello"])
            _hold_the_place(rt)
            task = asyncio.ensure_future(rt.invoke(hello, request("/"), limits=Limits(timeout_s=30)))
            while rt.gate.waiting == 0:
                await asyncio.sleep(0.01)
            in_line = rt.stats()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            return in_line, rt.stats()
        finally:
            await rt.aclose()

    in_line, after = arun(main())
    assert in_line["waiting_to_execute"] == 1 and in_line["running"] == 1
    assert after["waiting_to_execute"] == 0 and after["running"] == 0


def test_shutting_down_answers_the_invocations_in_line(components: dict[str, Path], data_dir: Path) -> None:
    async def main() -> BaseException | None:
        rt = Runtime(data_dir, max_executing=1)
        hello = await rt.load(components["hello"])
        _hold_the_place(rt)
        task = asyncio.ensure_future(rt.invoke(hello, request("/"), limits=Limits(timeout_s=30)))
        while rt.gate.waiting == 0:
            await asyncio.sleep(0.01)
        await rt.aclose()
        try:
            await task
        except FunctionFailed as exc:
            return exc
        return None

    error = arun(main())
    assert isinstance(error, FunctionFailed) and "shutting down" in str(error)


def test_an_error_in_the_epoch_check_stops_that_guest_only(
    components: dict[str, Path], data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An exception raised into wasmtime from the epoch callback aborted the whole process."""

    def broken_pause(self: RunGate, inv: object) -> None:
        raise RuntimeError("broken on purpose")

    async def main() -> tuple[BaseException | None, int]:
        rt = Runtime(data_dir, max_executing=1)
        try:
            spin = await rt.load(components["spin"])
            hello = await rt.load(components["hello"])
            error: BaseException | None = None
            with monkeypatch.context() as m:
                m.setattr(RunGate, "pause", broken_pause)
                try:
                    await rt.invoke(spin, request("/"), limits=Limits(timeout_s=5))
                except FunctionTrap as exc:
                    error = exc
            other = await rt.invoke(hello, request("/"), limits=Limits(timeout_s=30))
            await drain(other)
            return error, other.status
        finally:
            await rt.aclose()

    error, status = arun(main())
    assert isinstance(error, FunctionTrap) and "epoch check" in str(error)
    assert status == 200


def test_an_invocation_that_gets_no_thread_is_answered_and_its_place_passed_on(
    components: dict[str, Path], data_dir: Path
) -> None:
    """A computing guest hands its place to the invocation in line at an epoch check; if no
    thread can be started for it, it gets an error, and the place is not lost with it."""

    def no_thread(job: Start) -> None:
        raise RuntimeError("can't start new thread")

    async def main() -> tuple[BaseException | None, int, dict[str, int]]:
        rt = Runtime(data_dir, max_executing=1)
        try:
            spin = await rt.load(components["spin"])
            hello = await rt.load(components["hello"])
            spinning = asyncio.ensure_future(rt.invoke(spin, request("/"), limits=Limits(timeout_s=3)))
            while rt.gate.executing == 0:
                await asyncio.sleep(0.01)
            start, rt.gate._start = rt.gate._start, no_thread  # type: ignore[method-assign]
            error: BaseException | None = None
            try:
                await rt.invoke(hello, request("/"), limits=Limits(timeout_s=30))
            except FunctionFailed as exc:
                error = exc
            rt.gate._start = start  # type: ignore[method-assign]
            with contextlib.suppress(FunctionTimeout):
                await spinning
            after = await rt.invoke(hello, request("/"), limits=Limits(timeout_s=30))
            await drain(after)
            return error, after.status, rt.stats()
        finally:
            await rt.aclose()

    error, status, stats = arun(main())
    assert isinstance(error, FunctionFailed) and "no guest thread" in str(error)
    assert status == 200
    assert stats["executing"] == 0 and stats["running"] == 0


def test_a_gate_needs_a_place() -> None:
    with pytest.raises(ValueError, match="max_executing must be at least 1"):
        RunGate(0, lambda job: None)


def test_the_gate_size_comes_from_the_environment_when_not_given(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def size() -> int:
        rt = Runtime(data_dir)
        try:
            return rt.gate.size
        finally:
            await rt.aclose()

    monkeypatch.setenv("EDGEFN_MAX_EXECUTING", "3")
    assert arun(size()) == 3
    monkeypatch.setenv("EDGEFN_MAX_EXECUTING", "none")
    with pytest.raises(ValueError, match="EDGEFN_MAX_EXECUTING must be a whole number"):
        Runtime(data_dir)


def test_by_default_one_guest_executes_at_a_time(
    components: dict[str, Path], data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One place per process, whatever the cores: two guests executing at once only hand the GIL
    back and forth (docs/functions.md); cores are for worker processes."""
    monkeypatch.delenv("EDGEFN_MAX_EXECUTING", raising=False)

    async def main() -> tuple[int, list[int], int]:
        rt = Runtime(data_dir)
        try:
            hello = await rt.load(components["hello"])
            limits = Limits(instance_reuse=100)
            pool = rt.warm_pool(hello, limits)
            resps = await asyncio.gather(
                *(rt.invoke(hello, request("/"), limits=limits, pool=pool) for _ in range(8))
            )
            for r in resps:
                await drain(r)
            return rt.gate.size, [r.status for r in resps], rt.gate.peak
        finally:
            await rt.aclose()

    size, statuses, peak = arun(main())
    assert size == 1
    assert statuses == [200] * 8
    assert peak == 1


def test_a_closed_gate_admits_nothing() -> None:
    gate = RunGate(1, lambda job: None)
    assert gate.close() == []
    with pytest.raises(FunctionFailed, match="shutting down"):
        gate.admit(Start(_Holder(), lambda: None, lambda error: None))  # type: ignore[arg-type]


def test_a_place_handed_over_on_the_loop_thread_does_not_wake_the_loop(
    components: dict[str, Path], data_dir: Path
) -> None:
    """Requests waiting in line for an inline run get their place from the inline run before them,
    on the loop's own thread: queued there with `call_soon`, not posted through the loop's wake-up
    pipe (`call_soon_threadsafe`), which under load nearly every request paid."""

    async def main() -> tuple[list[int], int, int]:
        rt = Runtime(data_dir, max_executing=1)
        try:
            hello = await rt.load(components["hello"])
            limits = Limits(instance_reuse=100, timeout_s=60)
            pool = rt.warm_pool(hello, limits)
            await drain(await rt.invoke(hello, request("/"), limits=limits, pool=pool))  # seasoned
            inline_before = rt.ran_inline
            loop = asyncio.get_running_loop()
            wakeups = 0
            threadsafe = loop.call_soon_threadsafe

            def counted(*args: Any, **kwargs: Any) -> Any:
                nonlocal wakeups
                wakeups += 1
                return threadsafe(*args, **kwargs)

            loop.call_soon_threadsafe = counted  # type: ignore[method-assign]
            holder = _hold_the_place(rt)
            tasks = [
                asyncio.ensure_future(rt.invoke(hello, request("/"), limits=limits, pool=pool))
                for _ in range(8)
            ]
            while rt.gate.waiting < 8:
                await asyncio.sleep(0.01)
            rt.gate.leave(holder.inv)  # here, on the loop's thread, as an inline run leaves
            statuses = []
            for resp in await asyncio.gather(*tasks):
                await drain(resp)
                statuses.append(resp.status)
            return statuses, rt.ran_inline - inline_before, wakeups
        finally:
            await rt.aclose()

    statuses, inline, wakeups = arun(main())
    assert statuses == [200] * 8
    assert inline == 8  # each waited in line for the loop's thread, and ran there
    assert wakeups == 0
