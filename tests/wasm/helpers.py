"""Small helpers shared by the wasm tests: request bodies, draining, a runtime per test."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from wasm_runtime import GuestRequest, GuestResponse, Limits, OutboundPolicy, OutboundTransport, Runtime
from wasm_runtime._context import Invocation
from wasm_runtime._slots import DEFAULT_SLOTS
from wasm_runtime._streams import MAX_IO
from wasm_runtime.outbound import HttpxTransport


def pattern(n: int, start: int = 0) -> bytes:
    """`n` bytes of the stream example's body from offset `start`: byte k is k % 256."""
    block = bytes(range(256))
    return (block * (n // 256 + 2))[start % 256 : start % 256 + n]


async def chunks(*parts: bytes, delay: float = 0.0) -> AsyncIterator[bytes]:
    for p in parts:
        if delay:
            await asyncio.sleep(delay)
        yield p


def request(
    path: str = "/",
    method: str = "GET",
    headers: list[tuple[str, bytes]] | None = None,
    body: AsyncIterator[bytes] | None = None,
) -> GuestRequest:
    return GuestRequest(method, "http", "fn.test", path, headers or [], body)


async def drain(resp: GuestResponse) -> bytes:
    return b"".join([c async for c in resp.body])


@contextlib.asynccontextmanager
async def runtime(
    data_dir: Path, transport: OutboundTransport | None = None, instance_slots: int = DEFAULT_SLOTS
) -> AsyncIterator[Runtime]:
    rt = Runtime(data_dir, transport=transport, max_threads=16, instance_slots=instance_slots)
    try:
        yield rt
    finally:
        await rt.aclose()


# The maker of instances ahead of need runs at the lowest priority: on a busy machine it may take
# a while, so tests wait for what it makes rather than assume it.
MAKER_WAIT_S = 60.0


async def until(check: Callable[[], bool], what: str, timeout: float = MAKER_WAIT_S) -> None:
    """Waits until `check()` holds; fails the test, saying `what` did not happen, after `timeout`."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not check():
        assert loop.time() < end, f"not within {timeout} s: {what}"
        await asyncio.sleep(0.01)


def invocation(limits: Limits | None = None, log_fn: Callable[[str, str], None] | None = None) -> Invocation:
    """An invocation of a GET / on the running event loop, for host code called without a guest."""
    return Invocation(
        loop=asyncio.get_running_loop(),
        request=request(),
        limits=limits or Limits(),
        env={},
        outbound=OutboundPolicy(),
        transport=HttpxTransport(),
        request_id="r1",
        log_fn=log_fn,
        io_max=MAX_IO,
    )
