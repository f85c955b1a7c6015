"""bench.wasm_inproc --calls counts the host's calls of a reused invoke and leaves no profiler
behind (its figures are the bench's, not a test's)."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

from bench import wasm_inproc

from .conftest import arun


def test_calls_are_counted_per_invoke_and_the_profiler_removed(data_dir: Path) -> None:
    fewer = arun(wasm_inproc.count_calls(data_dir, 20, wasm_inproc.HOST))
    more = arun(wasm_inproc.count_calls(data_dir, 20, wasm_inproc.GATEWAY_HEADERS))
    assert 0 < fewer["calls_per_invoke"] < more["calls_per_invoke"]  # each header costs host calls
    assert sys.getprofile() is None and threading.getprofile() is None
