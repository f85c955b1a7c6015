"""Reused instances answer on the event loop's thread, and what cannot stay there moves.

A run that waits, starts an outbound request or computes past the inline budget is dropped unseen
and runs again on a guest thread: nothing of it may reach the client, the origin or the logs, and
the loop is held for no longer than the budget and an epoch tick.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

from tests.servers import ServerThread
from wasm_runtime import FunctionTimeout, HttpxTransport, Limits, LoadedComponent, OutboundPolicy, Runtime
from wasm_runtime._pool import INLINE_FORGIVE, INLINE_RETRY, Warm, WarmPool

from .conftest import arun
from .helpers import chunks, drain, pattern, request, runtime
from .test_outbound import Origin

REUSE = Limits(instance_reuse=100, timeout_s=30)


async def served_once(
    rt: Runtime, comp: LoadedComponent, path: str, limits: Limits = REUSE, **kw: Any
) -> bytes:
    """One request on a guest thread (a pool without an instance that has served instantiates on
    one), after which its instance is in the pool and the next request may run on the loop."""
    ran = rt.stats()["ran_inline"]
    resp = await rt.invoke(comp, request(path), limits=limits, **kw)
    body = await drain(resp)
    assert rt.stats()["ran_inline"] == ran
    return body


def test_a_reused_instance_answers_on_the_loop_without_a_guest_thread(
    components: dict[str, Path], data_dir: Path
) -> None:
    async def main() -> tuple[list[bytes], list[tuple[str, str]], dict[str, int]]:
        logs: list[tuple[str, str]] = []
        async with runtime(data_dir) as rt:
            hello = await rt.load(components["hello"])
            bodies = []
            for i in range(5):
                resp = await rt.invoke(
                    hello, request(f"/n{i}"), limits=REUSE, log=lambda s, line: logs.append((s, line))
                )
                assert resp.status == 200
                bodies.append(await drain(resp))
            return bodies, logs, rt.stats()

    bodies, logs, stats = arun(main())
    assert [json.loads(b)["path"] for b in bodies] == [f"/n{i}" for i in range(5)]
    assert stats["ran_inline"] == 4  # the first instantiated, on a thread
    assert stats["moved_to_thread"] == 0
    assert stats["guest_threads"] == 1
    assert logs.count(("stdout", "hello handled GET /n3")) == 1


def test_a_request_with_a_body_runs_on_a_guest_thread(components: dict[str, Path], data_dir: Path) -> None:
    async def main() -> tuple[bytes, dict[str, int]]:
        async with runtime(data_dir) as rt:
            hello = await rt.load(components["hello"])
            await served_once(rt, hello, "/")
            resp = await rt.invoke(hello, request("/", "POST", body=chunks(b"abc", b"def")), limits=REUSE)
            return await drain(resp), rt.stats()

    body, stats = arun(main())
    assert json.loads(body)["body"] == "abcdef"
    assert stats["ran_inline"] == 0
    assert stats["moved_to_thread"] == 0


def test_a_guest_that_waits_moves_to_a_thread_and_its_pool_stays_there(
    components: dict[str, Path], data_dir: Path
) -> None:
    """The poller waits on timers (50, 150, 300 ms): its inline run stops at the first wait."""

    async def main() -> tuple[list[Any], dict[str, int]]:
        async with runtime(data_dir) as rt:
            poller = await rt.load(components["poller"])
            pool = rt.warm_pool(poller, REUSE)
            answers = [json.loads(await served_once(rt, poller, "/", pool=pool))["order"]]
            for _ in range(2):
                resp = await rt.invoke(poller, request("/"), limits=REUSE, pool=pool)
                answers.append(json.loads(await drain(resp))["order"])
            return answers, rt.stats()

    answers, stats = arun(main())
    assert answers == [[["body"], ["t50"], ["t150"], ["t300"]]] * 3
    assert stats["moved_to_thread"] == 1  # the third went to a thread at once
    assert stats["ran_inline"] == 0


def test_an_outbound_request_is_sent_once_from_the_guest_thread(
    components: dict[str, Path], data_dir: Path
) -> None:
    app = Origin()
    with ServerThread(app, lifespan="off") as origin:

        async def main() -> tuple[int, bytes, dict[str, int]]:
            rt = Runtime(data_dir, transport=HttpxTransport({"web": origin.url}))
            try:
                fetch = await rt.load(components["fetch"])
                policy = OutboundPolicy(allowed=("web",), origins=frozenset({"web"}))
                await served_once(rt, fetch, "/first", outbound=policy)
                resp = await rt.invoke(fetch, request("/once"), limits=REUSE, outbound=policy)
                return resp.status, await drain(resp), rt.stats()
            finally:
                await rt.aclose()

        status, body, stats = arun(main())
    assert (status, body) == (201, b"fetched: origin saw /once")
    assert [path for path, _ in app.seen] == ["/first", "/once"]
    assert stats["moved_to_thread"] == 1


def test_a_body_larger_than_the_sink_moves_and_arrives_whole(
    components: dict[str, Path], data_dir: Path
) -> None:
    """The stream example writes more than the sink holds: the inline run would wait for room."""
    size = 3 << 20

    async def main() -> tuple[bytes, dict[str, int]]:
        async with runtime(data_dir) as rt:
            stream = await rt.load(components["stream"])
            await served_once(rt, stream, "/?n=1&ms=0&size=10")
            resp = await rt.invoke(stream, request(f"/?n=3&ms=0&size={1 << 20}"), limits=REUSE)
            return await drain(resp), rt.stats()

    body, stats = arun(main())
    assert body == pattern(size)
    assert stats["moved_to_thread"] == 1


def test_a_spinning_guest_holds_the_loop_only_for_the_budget_then_times_out_on_a_thread(
    components: dict[str, Path], data_dir: Path
) -> None:
    """What it wrote inline (a head and a chunk) is not delivered: the client sees the run on the
    thread, whose chunk comes once, then the timeout."""

    async def main() -> tuple[bytes, BaseException | None, float, dict[str, int]]:
        async with runtime(data_dir) as rt:
            spin = await rt.load(components["spin"])
            limits = Limits(instance_reuse=100, timeout_s=2)
            await served_once(rt, spin, "/ok", limits)
            longest = 0.0
            stop = False

            async def watch() -> None:  # how long the loop goes without running this
                nonlocal longest
                last = time.monotonic()
                while not stop:
                    await asyncio.sleep(0.001)
                    now = time.monotonic()
                    longest = max(longest, now - last)
                    last = now

            watcher = asyncio.create_task(watch())
            await asyncio.sleep(0.01)
            resp = await rt.invoke(spin, request("/answer-then-spin"), limits=limits)
            got = b""
            error: BaseException | None = None
            try:
                async for chunk in resp.body:
                    got += chunk
            except FunctionTimeout as exc:
                error = exc
            stop = True
            await watcher
            return got, error, longest, rt.stats()

    got, error, longest, stats = arun(main())
    assert got == b"first"
    assert isinstance(error, FunctionTimeout)
    assert stats["moved_to_thread"] == 1
    assert longest < 0.5  # inline to its 2 s timeout, the loop would have stopped for all of it


def test_a_pool_that_moved_tries_the_loop_again_after_a_doubling_count() -> None:
    pool = WarmPool(128, provisioned=1)
    assert not pool.seasoned()  # no instance that has served
    pool.take()
    pool.done(Warm(store=None, handle=None, served=1), taken=False)  # type: ignore[arg-type]
    assert pool.seasoned()
    assert pool.runs_inline()
    pool.moved_to_thread()
    assert [pool.runs_inline() for _ in range(INLINE_RETRY)] == [False] * INLINE_RETRY
    assert pool.runs_inline()
    pool.moved_to_thread()
    assert sum(not pool.runs_inline() for _ in range(2 * INLINE_RETRY + 1)) == 2 * INLINE_RETRY
    for _ in range(INLINE_FORGIVE):  # a long run of inline runs: the next move counts as the first
        pool.ran_inline()
    pool.moved_to_thread()
    assert sum(not pool.runs_inline() for _ in range(INLINE_RETRY + 1)) == INLINE_RETRY
    assert not WarmPool(128, fresh=True).runs_inline()
