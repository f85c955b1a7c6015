"""Warm instances: reused up to instance_reuse, a pool sized to demand, provisioned instances."""

from __future__ import annotations

import asyncio
import textwrap
import threading
import time
from pathlib import Path

import pytest

from gateway.functions.registry_records import FunctionConfig, Invalid
from routes.errors import ConfigError
from routes.loader import load_config
from wasm_runtime import InvocationStats, Limits
from wasm_runtime._pool import Warm, WarmPool

from .conftest import arun
from .helpers import chunks, drain, request, runtime


def test_an_instance_serves_up_to_instance_reuse_requests(
    components: dict[str, Path], data_dir: Path
) -> None:
    async def main() -> list[bool]:
        async with runtime(data_dir) as rt:
            comp = await rt.load(components["hello"])
            pool = rt.warm_pool(comp, Limits(instance_reuse=3))
            fresh = []
            for _ in range(7):
                resp = await rt.invoke(comp, request("/"), limits=Limits(instance_reuse=3), pool=pool)
                await drain(resp)
                await asyncio.sleep(0.01)  # the instance goes back when the worker has finished
                fresh.append(resp.stats.fresh_instance)
            return fresh

    assert arun(main()) == [True, False, False, True, False, False, True]


def test_the_pool_keeps_as_many_instances_as_were_in_flight(
    components: dict[str, Path], data_dir: Path
) -> None:
    limits = Limits(instance_reuse=1000, memory_mb=64)

    async def burst(rt, comp, pool) -> list[InvocationStats]:  # type: ignore[no-untyped-def]
        # with a body (empty), on guest threads: without one, the first would try the event loop,
        # move at its first pause and spend its instance (test_inline.py)
        resps = await asyncio.gather(
            *(
                rt.invoke(comp, request("/?n=2&ms=300", body=chunks()), limits=limits, pool=pool)
                for _ in range(6)
            )
        )
        await asyncio.gather(*(drain(r) for r in resps))
        return [r.stats for r in resps]

    async def main() -> tuple[int, list[bool]]:
        async with runtime(data_dir) as rt:
            comp = await rt.load(components["stream"])
            pool = rt.warm_pool(comp, limits)
            # six streams in flight at once: each holds its instance until its body ends
            first = await burst(rt, comp, pool)
            assert all(s.fresh_instance for s in first)
            for _ in range(200):
                if pool.in_flight == 0:
                    break
                await asyncio.sleep(0.02)
            kept = pool.idle
            second = await burst(rt, comp, pool)
            return kept, [s.fresh_instance for s in second]

    kept, second_fresh = arun(main())
    assert kept == 6  # the old fixed pool kept 4
    assert second_fresh == [False] * 6


def test_provisioned_instances_are_made_ahead_and_refilled(
    components: dict[str, Path], data_dir: Path
) -> None:
    limits = Limits(instance_reuse=1)  # every request spends its instance: each one is refilled

    async def main() -> tuple[int, list[tuple[bool, float]], int, int]:
        async with runtime(data_dir) as rt:
            comp = await rt.load(components["hello"])
            pool = rt.warm_pool(comp, limits, provisioned=2)
            await rt.provisioned_ready(comp, pool)
            ready = pool.idle
            seen = []
            for _ in range(3):
                resp = await rt.invoke(comp, request("/"), limits=limits, pool=pool)
                await drain(resp)
                seen.append((resp.stats.fresh_instance, resp.stats.init_ms))
                for _ in range(200):  # the refill runs in the background after the request
                    if pool.idle == 2 and pool.in_flight == 0:
                        break
                    await asyncio.sleep(0.02)
            return ready, seen, pool.idle, pool.made

    ready, seen, idle_after, made = arun(main())
    assert ready == 2
    assert seen == [(False, 0.0)] * 3  # no request paid for instantiation
    assert idle_after == 2
    assert made == 5  # 2 at load, then one after each spent instance


def test_provisioned_ready_makes_the_queued_instances_beside_the_maker(
    components: dict[str, Path], data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At start-up the waiting caller's helpers make provisioned instances with the maker thread,
    each instance once."""
    makers: list[str] = []

    async def main() -> tuple[int, int, int]:
        async with runtime(data_dir) as rt:
            instantiate = rt._instantiate

            def slow_instantiate(*args: object, **kwargs: bool) -> Warm:
                makers.append(threading.current_thread().name)
                time.sleep(0.02)  # long enough that each thread finds a queued one to take
                return instantiate(*args, **kwargs)  # type: ignore[arg-type]

            monkeypatch.setattr(rt, "_instantiate", slow_instantiate)
            comp = await rt.load(components["hello"])
            pool = rt.warm_pool(comp, Limits(instance_reuse=5), provisioned=8)
            await rt.provisioned_ready(comp, pool)
            return pool.idle, pool.made, pool.refilling

    idle, made, refilling = arun(main())
    assert (idle, made, refilling) == (8, 8, 0)
    assert len(makers) == 8
    assert any(name.startswith("wasm-warm") for name in makers)
    assert any(not name.startswith("wasm-warm") for name in makers)  # made on the maker alone before

def test_provisioned_needs_instance_reuse(
    components: dict[str, Path], data_dir: Path, tmp_path: Path
) -> None:
    async def main() -> None:
        async with runtime(data_dir) as rt:
            comp = await rt.load(components["hello"])
            with pytest.raises(ValueError, match="instance_reuse"):
                rt.warm_pool(comp, Limits(), provisioned=1)

    arun(main())
    with pytest.raises(Invalid, match="provisioned: needs instance_reuse"):
        FunctionConfig.from_doc({"provisioned": 2})
    assert FunctionConfig.from_doc({"provisioned": 2, "instance_reuse": 10}).provisioned == 2
    path = tmp_path / "edgefn.toml"
    path.write_text(
        textwrap.dedent(
            f"""
            [functions.hello]
            component = "{components["hello"]}"
            provisioned = 2
            """
        )
    )
    with pytest.raises(ConfigError, match=r"functions\.hello\.provisioned: needs instance_reuse"):
        load_config(path)


def _fake_warm() -> Warm:
    """The pool only counts and hands out instances; it never touches their store or function."""
    return Warm(object(), object())  # type: ignore[arg-type]


def test_an_instance_out_serving_counts_towards_provisioned() -> None:
    """Refilling on every take made one instance per request under load, thrown away when the
    served ones came back; only a spent instance is made again."""
    pool = WarmPool(64, provisioned=2)
    assert pool.wanted() == 2
    pool.add_made(_fake_warm())
    pool.add_made(_fake_warm())
    first, second = pool.take(), pool.take()
    assert first is not None and second is not None
    assert pool.wanted() == 0  # both will come back
    pool.done(first, taken=True)
    assert pool.wanted() == 0
    pool.done(None, taken=True)  # spent
    assert pool.wanted() == 1


def test_a_reused_instance_keeps_nothing_of_earlier_requests(
    components: dict[str, Path], data_dir: Path
) -> None:
    """The guest never drops its request (componentize-py leaves the handle in the instance's
    table), yet each request's body stream (the client's connection behind it) and its invocation's
    log sink are gone when it ends, by reference counting: no collection runs here."""
    import gc
    import weakref

    async def main() -> tuple[int, int]:
        async with runtime(data_dir) as rt:
            comp = await rt.load(components["hello"])
            limits = Limits(instance_reuse=1000)
            pool = rt.warm_pool(comp, limits)
            await drain(await rt.invoke(comp, request("/"), limits=limits, pool=pool))
            bodies, sinks = [], []
            gc.disable()
            try:
                for _ in range(10):
                    body, sink = _chunks(b"x" * 100), _Sink()
                    bodies.append(weakref.ref(body))
                    sinks.append(weakref.ref(sink))
                    resp = await rt.invoke(
                        comp, request("/", "POST", body=body), limits=limits, pool=pool, log=sink
                    )
                    del body, sink
                    await drain(resp)
                    del resp
                await asyncio.sleep(0.1)  # the worker has finished with the last one
                return sum(r() is not None for r in bodies), sum(r() is not None for r in sinks)
            finally:
                gc.enable()

    assert arun(main()) == (0, 0)


class _Sink:
    def __call__(self, stream: str, line: str) -> None:
        pass


async def _chunks(data: bytes):  # type: ignore[no-untyped-def]
    yield data
