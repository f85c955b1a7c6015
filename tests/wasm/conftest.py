from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import pytest

from wasm_runtime.build import cache_dir, ensure_built

ROOT = Path(__file__).resolve().parents[2]
GUESTS = Path(__file__).resolve().parent / "guests"
EXAMPLES = ("hello", "stream", "fetch")
TEST_GUESTS = ("spin", "hog", "hosthog", "poller", "once")


@pytest.fixture(scope="session")
def components() -> dict[str, Path]:
    """Every guest the tests use, built once per content hash (a cache hit costs a file copy)."""
    built = {
        name: ensure_built(ROOT / "examples" / name, ROOT / "examples" / name / f"{name}.wasm")
        for name in EXAMPLES
    }
    for name in TEST_GUESTS:
        built[name] = ensure_built(GUESTS / name, GUESTS / name / f"{name}.wasm")
    return built


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """Compiled artifacts kept across test runs, so only the first run pays for compilation."""
    path = cache_dir().parent / "test-data"
    path.mkdir(parents=True, exist_ok=True)
    return path


def arun(coro: Coroutine[Any, Any, Any], timeout: float = 120.0) -> Any:
    async def bounded() -> Any:
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(bounded())
