from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from wasmtime import Engine
from wasmtime.component import Component

from tests.wasm_fastcall import harness
from wasm_runtime import _fastcall


@pytest.fixture(scope="session")
def fast() -> None:
    """The fast paths, installed for the whole test process (install is process-wide)."""
    _fastcall.install()
    assert _fastcall.is_installed()


@pytest.fixture(scope="session")
def engine() -> Engine:
    return Engine()


@pytest.fixture(scope="session")
def component(engine: Engine) -> Component:
    return harness.load_guest(engine)


@pytest.fixture(scope="session")
def baseline(tmp_path_factory: pytest.TempPathFactory, component: Component) -> dict[str, Any]:
    """The scenario matrix answered by stock wasmtime-py, in a child process that never installs."""
    out = Path(tmp_path_factory.mktemp("baseline")) / "baseline.pickle"
    subprocess.run(
        [sys.executable, "-m", "tests.wasm_fastcall.scenarios", "--out", str(out)],
        cwd=harness.REPO, check=True, timeout=240,
    )
    with out.open("rb") as f:
        result: dict[str, Any] = pickle.load(f)
    return result
