"""Instance slots (wasm_runtime/_slots.py): fresh instances made where memory stays mapped, a
slot used again keeps nothing of the instance before, and their number is a ceiling, not a limit
on how many fresh instances run at once."""

from __future__ import annotations

import asyncio
import gc
import logging
from pathlib import Path

import pytest

from wasm_runtime import FunctionTrap, Limits, Runtime, _slots

from .conftest import arun
from .helpers import drain, pattern, request, runtime, until


def test_a_slot_used_again_keeps_nothing_of_the_instance_before(
    components: dict[str, Path], data_dir: Path
) -> None:
    """`once` answers only its instance's first request (a guest global counts them), so each
    answer with x-served 1 shows the slot's memory was reset between instances. Before each request
    the instance made ahead is dropped (which gives its slot back) once the maker is idle, so the
    request makes its own, in the one slot, which an instance before it used."""
    limits = Limits()  # instance_reuse = 0

    async def main() -> tuple[list[tuple[int, bytes, bool, bool]], int, int]:
        async with runtime(data_dir, instance_slots=1) as rt:
            comp = await rt.load(components["once"])
            assert comp.slotted is not None
            pool = rt.warm_pool(comp, limits)
            seen = []
            for _ in range(5):
                await until(lambda: pool.refilling == 0, "the maker made the instance it was asked for")
                pool.clear()
                gc.collect()
                await until(lambda: rt.slots.in_use == 0, "a dropped instance gave its slot back")
                resp = await rt.invoke(comp, request("/"), limits=limits, pool=pool)
                await drain(resp)
                served = dict(resp.headers).get("x-served", b"")
                seen.append((resp.status, served, resp.stats.instance_slot, resp.stats.init_ms > 0))
            return seen, rt.slots.made, rt.stats()["made_in_slots"]

    seen, made, reported = arun(main())
    assert seen == [(200, b"1", True, True)] * 5
    assert made >= 5 and reported == made


def test_more_fresh_instances_than_slots_run_at_once_beside_them(
    components: dict[str, Path], data_dir: Path
) -> None:
    """Six streams held open at once with two slots: two instances in slots, four made as
    before, every body whole."""
    limits = Limits(timeout_s=30)

    async def main() -> tuple[list[tuple[int, bytes]], int, int, int]:
        async with runtime(data_dir, instance_slots=2) as rt:
            comp = await rt.load(components["stream"])
            pool = rt.warm_pool(comp, limits)
            responses = await asyncio.gather(
                *(rt.invoke(comp, request("/?n=3&ms=400"), limits=limits, pool=pool) for _ in range(6))
            )
            running, in_use = rt.stats()["running"], rt.slots.in_use
            bodies = [(r.status, await drain(r)) for r in responses]
            await until(lambda: pool.refilling == 0, "the maker is idle")
            pool.clear()
            gc.collect()
            await until(lambda: rt.slots.in_use == 0, "every slot given back")
            return bodies, running, in_use, rt.slots.made

    bodies, running, in_use, made = arun(main())
    assert bodies == [(200, pattern(48))] * 6
    assert running == 6 and in_use == 2  # all six live, two of them in the slots
    assert made >= 2


def test_a_component_that_does_not_fit_a_slot_is_served_without(
    components: dict[str, Path],
    data_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """wasmtime refuses it as it is loaded into the slots' engine (hello has 18 core instances);
    the reason is logged and its fresh instances are made as before."""
    monkeypatch.setattr(_slots, "CORE_INSTANCES_PER_SLOT", 4)

    async def main() -> tuple[bool, list[int], int]:
        async with runtime(data_dir, instance_slots=2) as rt:
            comp = await rt.load(components["hello"])
            statuses = []
            for _ in range(3):
                resp = await rt.invoke(comp, request("/"), limits=Limits())
                await drain(resp)
                statuses.append(resp.status)
            return comp.slotted is None, statuses, rt.slots.made

    with caplog.at_level(logging.INFO, logger="edgefn.wasm"):
        unslotted, statuses, made = arun(main())
    assert unslotted and statuses == [200, 200, 200] and made == 0
    assert any(
        "hello: fresh instances made without instance slots" in r.message
        and "18 core module instances" in r.message
        for r in caplog.records
    )


def test_no_slots_no_second_engine(components: dict[str, Path], data_dir: Path) -> None:
    async def main() -> tuple[object, object, int, int]:
        async with runtime(data_dir, instance_slots=0) as rt:
            comp = await rt.load(components["hello"])
            resp = await rt.invoke(comp, request("/"), limits=Limits())
            await drain(resp)
            return rt.slots.engine, comp.slotted, resp.status, rt.slots.made

    assert arun(main()) == (None, None, 200, 0)
    with pytest.raises(ValueError, match=">= 0"):
        Runtime(Path("unused"), instance_slots=-1)


def test_instances_that_serve_again_are_not_made_in_slots(
    components: dict[str, Path], data_dir: Path
) -> None:
    """A reused instance pays for its memory's setting up once; the slots are for fresh ones."""
    limits = Limits(instance_reuse=100)

    async def main() -> tuple[list[int], int]:
        async with runtime(data_dir, instance_slots=2) as rt:
            comp = await rt.load(components["hello"])
            statuses = []
            for _ in range(3):
                resp = await rt.invoke(comp, request("/"), limits=limits)
                await drain(resp)
                statuses.append(resp.status)
            return statuses, rt.slots.made

    assert arun(main()) == ([200, 200, 200], 0)


def test_a_guest_past_its_memory_limit_in_a_slot_traps_and_the_slot_serves_again(
    components: dict[str, Path], data_dir: Path
) -> None:
    """The store's memory limit holds in a slot (whose own ceiling is a 32-bit memory's whole
    range), the trapped instance gives its slot back, and the next one in it starts from the
    component's image, not from the 64 MiB the one before grew to. With the made-ahead instance
    dropped first, the request makes its own, in the one free slot."""
    limits = Limits(memory_mb=64, timeout_s=20)

    async def main() -> tuple[BaseException | None, int, tuple[int, bool, int]]:
        async with runtime(data_dir, instance_slots=1) as rt:
            hog = await rt.load(components["hog"])
            assert hog.slotted is not None
            pool = rt.warm_pool(hog, limits)
            error: BaseException | None = None
            for path in ("/grow", "/ok"):
                await until(lambda: pool.refilling == 0, "the maker made the instance it was asked for")
                pool.clear()
                gc.collect()
                await until(lambda: rt.slots.in_use == 0, "every slot given back")
                made = rt.slots.made
                try:
                    resp = await rt.invoke(hog, request(path), limits=limits, pool=pool)
                    await drain(resp)
                except FunctionTrap as exc:
                    error = exc
                    made_for_grow = rt.slots.made - made
            return error, made_for_grow, (resp.status, resp.stats.instance_slot, resp.stats.max_memory_bytes)

    error, made_for_grow, (status, in_slot, memory) = arun(main())
    assert isinstance(error, FunctionTrap) and error.code == "function_crashed", error
    assert made_for_grow >= 1
    assert status == 200 and in_slot
    assert 0 < memory < 32 << 20
