from __future__ import annotations

from pathlib import Path

import pytest

from wasm_runtime.build import ensure_built

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ("hello", "stream", "fetch", "edge")


@pytest.fixture(scope="session")
def example_components() -> dict[str, Path]:
    """The example functions, built once per content hash (a cache hit costs a file copy)."""
    return {
        name: ensure_built(ROOT / "examples" / name, ROOT / "examples" / name / f"{name}.wasm")
        for name in EXAMPLES
        if (ROOT / "examples" / name / "app.py").exists()
    }
