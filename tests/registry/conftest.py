"""A registry over a real SQLite store in a temporary directory, and fake code files.

The registry does not look inside code (the admin API validates components before `deploy`), so
the rules are tested with small files whose bytes differ; the admin API tests use real components.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from gateway.functions.registry import Registry
from gateway.functions.registry_sqlite import SqliteStore


class Clock:
    """A clock the test moves, so `created` and `last_modified` are predictable."""

    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


@pytest.fixture
def code(tmp_path: Path) -> Callable[[str], Path]:
    """`code("v1")` is a file whose bytes (and so sha256) are set by the text."""
    directory = tmp_path / "code"
    directory.mkdir()

    def make(text: str) -> Path:
        path = directory / f"{text}.wasm"
        path.write_bytes(b"\0asm-fake:" + text.encode())
        return path

    return make


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Registry]:
    reg = Registry(SqliteStore(tmp_path / "data"), url_domain="fn.test", url_port=8080, clock=Clock())
    yield reg
    reg.close()
