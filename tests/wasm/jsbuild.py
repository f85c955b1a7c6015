"""Builds the componentize-js test guest, when node and npm are present (else the tests skip).

componentize-js 0.23 targets `wasi:http/proxy@0.2.10`; no package ships that WIT, so the
spin-sdk's 0.2.6 WIT is copied with its versions renamed, into a temporary directory. The
toolchain is installed once into the build cache; the component is cached by content hash.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from wasm_runtime.build import cache_dir, wit_dir

COMPONENTIZE_JS = "@bytecodealliance/componentize-js@0.23.0"
VERSION = "0.2.10"


def available() -> bool:
    return shutil.which("node") is not None and shutil.which("npm") is not None


def _toolchain() -> Path:
    root = cache_dir().parent / "componentize-js-0.23.0"
    cli = root / "node_modules" / ".bin" / "componentize-js"
    if not cli.exists():
        root.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["npm", "install", "--no-audit", "--no-fund", "--prefix", str(root), COMPONENTIZE_JS],
            check=True,
            capture_output=True,
            timeout=600,
        )
    return cli


def _wit(into: Path) -> None:
    deps = into / "deps"
    deps.mkdir(parents=True)
    for pkg in ("http", "io", "clocks", "random", "cli", "filesystem", "sockets"):
        shutil.copytree(wit_dir() / "deps" / f"{pkg}@0.2.6", deps / pkg)
    for path in into.rglob("*.wit"):
        path.write_text(path.read_text().replace("@0.2.6", f"@{VERSION}"))
    (into / "world.wit").write_text(
        f"package local:app;\nworld app {{\n  include wasi:http/proxy@{VERSION};\n}}\n"
    )


def ensure_js_built(source: Path, out: Path) -> Path:
    digest = hashlib.sha256(source.read_bytes() + COMPONENTIZE_JS.encode()).hexdigest()
    cached = cache_dir() / f"js-{digest}.wasm"
    if not cached.exists():
        cli = _toolchain()
        with tempfile.TemporaryDirectory() as tmp:
            wit = Path(tmp) / "wit"
            _wit(wit)
            built = Path(tmp) / "app.wasm"
            subprocess.run(
                [str(cli), "--wit", str(wit), "--world-name", "app", "-o", str(built), str(source)],
                check=True,
                capture_output=True,
                timeout=600,
                cwd=tmp,
            )
            cached.parent.mkdir(parents=True, exist_ok=True)
            tmp_out = cached.with_suffix(f".{os.getpid()}.tmp")
            shutil.copyfile(built, tmp_out)
            os.replace(tmp_out, cached)
    shutil.copyfile(cached, out)
    return out
