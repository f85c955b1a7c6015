"""Fresh-instance functions (instance_reuse = 0): instances made ahead of need, one request each,
and used instances torn down as soon as their request has its answer."""

from __future__ import annotations

import asyncio
import gc
import json
from pathlib import Path

import wasmtime

from wasm_runtime import Limits, Runtime
from wasm_runtime._pool import Warm, WarmPool

from .conftest import arun
from .helpers import chunks, drain, request, runtime, until


async def _made(pool: WarmPool, idle: int = 1) -> None:
    """Waits until the pool holds `idle` instances made ahead (none is made while a guest runs
    only if the machine has no core to spare, so this waits rather than assumes)."""
    await until(lambda: pool.idle >= idle, f"{idle} instance(s) made ahead")


def test_each_fresh_request_gets_an_instance_made_ahead_that_no_other_request_used(
    components: dict[str, Path], data_dir: Path
) -> None:
    """`once` answers only the first request of an instance (a guest global counts them): every
    request answering with x-served 1 shows no instance served twice, and init_ms 0 shows the
    instance was made before the request came."""
    limits = Limits()  # instance_reuse = 0

    async def main() -> list[tuple[int, bytes, bool, float]]:
        async with runtime(data_dir) as rt:
            comp = await rt.load(components["once"])
            pool = rt.warm_pool(comp, limits)
            assert pool.fresh and pool.idle == 0  # nothing is made before any demand
            seen = []
            for i in range(4):
                if i:
                    await _made(pool)
                resp = await rt.invoke(comp, request("/"), limits=limits, pool=pool)
                await drain(resp)
                served = dict(resp.headers).get("x-served", b"")
                seen.append((resp.status, served, resp.stats.fresh_instance, resp.stats.init_ms))
            return seen

    seen = arun(main())
    assert [(s, served, fresh) for s, served, fresh, _ in seen] == [(200, b"1", True)] * 4
    assert seen[0][3] > 0  # the first request found none made and paid for its instance
    assert [init for *_, init in seen[1:]] == [0.0] * 3


def test_an_instance_made_ahead_sees_the_invocations_env_not_an_earlier_one(
    components: dict[str, Path], data_dir: Path
) -> None:
    """A never-used instance holds nothing of any request or configuration: the environment (and
    with it secrets) is the invocation's, so a changed env is never served from a stale one."""
    limits = Limits()

    async def main() -> list[tuple[dict[str, str], float]]:
        async with runtime(data_dir) as rt:
            comp = await rt.load(components["hello"])
            pool = rt.warm_pool(comp, limits)
            out = []
            for value in ("before", "after"):
                if out:
                    await _made(pool)
                resp = await rt.invoke(comp, request("/"), limits=limits, env={"SECRET": value}, pool=pool)
                out.append((json.loads(await drain(resp))["env"], resp.stats.init_ms))
            return out

    (env_a, _), (env_b, init_b) = arun(main())
    assert env_a == {"SECRET": "before"}
    assert env_b == {"SECRET": "after"}
    assert init_b == 0.0  # served by an instance made while env was still "before"


def test_instances_made_ahead_stay_within_the_memory_budget(
    components: dict[str, Path], data_dir: Path
) -> None:
    """Six requests in flight at once ask for six instances ahead; a budget of 128 MiB at 64 MiB
    each allows two."""
    limits = Limits(memory_mb=64)

    async def main() -> tuple[int, int]:
        rt = Runtime(data_dir, max_threads=16, warm_budget_mb=128)
        try:
            comp = await rt.load(components["stream"])
            pool = rt.warm_pool(comp, limits)
            resps = await asyncio.gather(
                *(rt.invoke(comp, request("/?n=2&ms=200"), limits=limits, pool=pool) for _ in range(6))
            )
            await asyncio.gather(*(drain(r) for r in resps))
            await _made(pool, 2)
            await rt.provisioned_ready(comp, pool)  # whatever the maker had queued has run
            return pool.idle, pool.cap
        finally:
            await rt.aclose()

    idle, cap = arun(main())
    assert cap == 2
    assert idle == 2


def _fake_warm() -> Warm:
    return Warm(object(), object())  # type: ignore[arg-type]


def test_a_fresh_pool_makes_one_for_each_taken_within_its_cap() -> None:
    """A taken instance never comes back (unlike a warm one), so it is made again at once; the
    pool never asks for more than recent demand, nor more than its budget allows."""
    pool = WarmPool(64, budget_mb=128, fresh=True)
    assert pool.wanted() == 0  # no demand yet
    for _ in range(3):
        assert pool.take() is None
    assert pool.wanted() == 2  # three in flight, but the budget holds two
    assert pool.wanted() == 0  # those two are under way
    pool.add_made(_fake_warm())
    pool.add_made(_fake_warm())
    for _ in range(3):
        pool.done(None, taken=False)
    taken = pool.take()
    assert taken is not None
    assert pool.wanted() == 1  # the one taken is out for good
    try:
        WarmPool(64, provisioned=1, fresh=True)
    except ValueError as exc:
        assert "instance_reuse" in str(exc)
    else:
        raise AssertionError("provisioned instances were accepted for a fresh pool")


def _open_stores() -> int:
    n = 0
    for obj in gc.get_objects():
        if isinstance(obj, wasmtime.Store):
            try:
                obj.ptr()
            except ValueError:  # closed
                continue
            n += 1
    return n


def test_a_used_instance_is_torn_down_when_its_request_ends_not_by_the_collector(
    components: dict[str, Path], data_dir: Path
) -> None:
    """A request with a body leaves its instance in a reference cycle; the collector freed it
    later, in the middle of another request, on whichever thread it ran. With the collector off,
    only the instance made ahead for the next request may be left open."""

    async def main() -> tuple[int, int, int]:
        async with runtime(data_dir) as rt:
            comp = await rt.load(components["hello"])
            pool = rt.warm_pool(comp, Limits())
            gc.collect()
            gc.disable()
            try:
                before = _open_stores()
                for _ in range(5):
                    resp = await rt.invoke(
                        comp, request("/", "POST", body=chunks(b"x")), limits=Limits(), pool=pool
                    )
                    await drain(resp)
                loop = asyncio.get_running_loop()
                until = loop.time() + 30
                for _ in range(2):  # again once the maker has run what it had queued
                    while _open_stores() - before != pool.idle and loop.time() < until:
                        await asyncio.sleep(0.01)  # the teardown runs just after the answer
                    await rt.provisioned_ready(comp, pool)
                return before, _open_stores(), pool.idle
            finally:
                gc.enable()

    before, after, idle = arun(main())
    assert after - before == idle <= 1
