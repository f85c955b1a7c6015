"""Bodies stream both ways, over real sockets: chunks keep their timing, big bodies stay exact,
a slow reader blocks the guest, a client that leaves cancels it."""

from __future__ import annotations

import asyncio
import itertools
import time
from pathlib import Path

import httpx

from tests.servers import ServerThread
from wasm_runtime import FunctionTimeout, LastChunk, Limits
from wasm_runtime._streams import LAST_TAG_MAX

from .conftest import arun
from .fnserver import Fn, FnApp
from .helpers import drain, pattern, request, runtime


def test_five_chunks_300ms_apart_arrive_as_five_chunks(components: dict[str, Path], data_dir: Path) -> None:
    app = FnApp(data_dir, {"stream": Fn(components["stream"])})
    with ServerThread(app) as server, httpx.Client(timeout=30) as client:
        client.get(f"{server.url}/stream/?n=1&ms=0").raise_for_status()  # first-request costs aside
        arrivals: list[tuple[float, bytes]] = []
        t0 = time.perf_counter()
        with client.stream("GET", f"{server.url}/stream/?n=5&ms=300&size=100") as resp:
            assert resp.status_code == 200
            for chunk in resp.iter_raw():
                arrivals.append((time.perf_counter() - t0, chunk))
    assert len(arrivals) == 5, [len(c) for _, c in arrivals]
    assert b"".join(c for _, c in arrivals) == pattern(500)
    assert arrivals[0][0] < 0.1, f"first byte after {arrivals[0][0] * 1000:.0f} ms"
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(arrivals)]
    assert all(0.2 < g < 1.0 for g in gaps), gaps


def test_twenty_megabytes_arrive_byte_exact(components: dict[str, Path], data_dir: Path) -> None:
    app = FnApp(data_dir, {"stream": Fn(components["stream"], Limits(timeout_s=60))})
    size = 20 << 20
    with ServerThread(app) as server, httpx.Client(timeout=60) as client:
        resp = client.get(f"{server.url}/stream/?n=20&ms=0&size={1 << 20}")
    assert resp.status_code == 200
    assert len(resp.content) == size
    assert resp.content == pattern(size)


def test_a_slow_reader_blocks_the_guest_instead_of_buffering(
    components: dict[str, Path], data_dir: Path
) -> None:
    async def main() -> tuple[bytes, float, float]:
        async with runtime(data_dir) as rt:
            comp = await rt.load(components["stream"])
            resp = await rt.invoke(comp, request(f"/?n=8&ms=0&size={1 << 20}"), limits=Limits(timeout_s=60))
            it = aiter(resp.body)
            first = await anext(it)
            await asyncio.sleep(1.0)  # the reader stalls; the guest must wait for room
            stalled_at = resp.stats.duration_ms
            rest = b"".join([c async for c in it])
            return first + rest, stalled_at, resp.stats.duration_ms

    body, duration_while_stalled, duration = arun(main())
    assert body == pattern(8 << 20)
    assert duration_while_stalled == 0, "the guest finished while nobody read: it was buffered without bound"
    assert duration >= 1000


def test_a_client_that_leaves_cancels_the_guest(components: dict[str, Path], data_dir: Path) -> None:
    async def main() -> float:
        async with runtime(data_dir) as rt:
            comp = await rt.load(components["stream"])
            resp = await rt.invoke(comp, request("/?n=50&ms=100&size=10"), limits=Limits(timeout_s=30))
            it = resp.body
            await anext(aiter(it))
            t0 = time.perf_counter()
            await it.aclose()  # type: ignore[attr-defined]
            while resp.stats.duration_ms == 0 and time.perf_counter() - t0 < 10:
                await asyncio.sleep(0.02)
            return time.perf_counter() - t0

    ended_after = arun(main())
    assert ended_after < 1.0, f"the guest kept running {ended_after:.1f} s after the client left"


def test_request_body_is_pulled_only_as_the_guest_reads(components: dict[str, Path], data_dir: Path) -> None:
    pulled = 0

    async def body():  # type: ignore[no-untyped-def]
        nonlocal pulled
        for _ in range(100):
            pulled += 1
            yield b"x" * 1024

    async def main() -> int:
        async with runtime(data_dir) as rt:
            comp = await rt.load(components["stream"])  # never reads its request body
            resp = await rt.invoke(comp, request("/?n=1&ms=0", "POST", body=body()), limits=Limits())
            await drain(resp)
            return pulled

    assert arun(main()) == 0


def test_a_timeout_after_the_headers_ends_the_body_with_an_error(
    components: dict[str, Path], data_dir: Path
) -> None:
    async def main() -> tuple[int, BaseException | None]:
        async with runtime(data_dir) as rt:
            comp = await rt.load(components["stream"])
            resp = await rt.invoke(comp, request("/?n=20&ms=200&size=10"), limits=Limits(timeout_s=1.0))
            got = 0
            try:
                async for chunk in resp.body:
                    got += len(chunk)
            except FunctionTimeout as exc:
                return got, exc
            return got, None

    got, exc = arun(main())
    assert isinstance(exc, FunctionTimeout)
    assert 0 < got < 200


def test_only_a_small_chunk_the_body_ends_with_comes_as_a_last_chunk(
    components: dict[str, Path], data_dir: Path
) -> None:
    async def kinds(path: str) -> list[tuple[type, int]]:
        async with runtime(data_dir) as rt:
            comp = await rt.load(components["stream"])
            resp = await rt.invoke(comp, request(path), limits=Limits(timeout_s=30))
            await asyncio.sleep(0.3)  # the guest has finished: its chunks and end are all queued
            return [(type(chunk), len(chunk)) async for chunk in resp.body]

    small = arun(kinds("/?n=3&ms=0&size=10"))
    assert [n for _, n in small] == [10, 10, 10]
    assert [t for t, _ in small] == [bytes, bytes, LastChunk]
    big = arun(kinds(f"/?n=1&ms=0&size={LAST_TAG_MAX + 1}"))
    assert big == [(bytes, LAST_TAG_MAX + 1)]  # tagging copies: a big chunk ends the usual way
