"""Small helpers shared by the wasm tests: request bodies, draining, a runtime per test."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from wasm_runtime import GuestRequest, GuestResponse, OutboundTransport, Runtime


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
async def runtime(data_dir: Path, transport: OutboundTransport | None = None) -> AsyncIterator[Runtime]:
    rt = Runtime(data_dir, transport=transport, max_threads=16)
    try:
        yield rt
    finally:
        await rt.aclose()
