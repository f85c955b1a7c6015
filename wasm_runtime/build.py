"""Building Python guests into wasi:http/proxy components with componentize-py.

The WIT comes from the installed `spin-sdk` package (its `wit/` directory holds wasi:http 0.2.x),
so nothing is copied into the repository. `ensure_built` skips the build when a content hash of
the sources and the componentize-py version matches an artifact in the build cache
(`$EDGEFN_BUILD_CACHE`, else `~/.cache/edgefn/components/`).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

WORLD = "wasi:http/proxy@0.2.6"
APP_MODULE = "app"
SKIP_DIRS = {"__pycache__", ".git", ".venv", "build"}

Progress = Callable[[str], None]


class BuildError(Exception):
    pass


def wit_dir() -> Path:
    spec = importlib.util.find_spec("spin_sdk")
    if spec is None or not spec.submodule_search_locations:
        raise BuildError("the spin-sdk package (which ships the wasi:http WIT) is not installed")
    path = Path(next(iter(spec.submodule_search_locations))) / "wit"
    if not (path / "deps" / "http@0.2.6").is_dir():
        raise BuildError(f"no wasi:http@0.2.6 WIT under {path}")
    return path


def _componentize_cmd() -> list[str]:
    exe = Path(sys.executable).with_name("componentize-py")
    if exe.exists():
        return [str(exe)]
    found = shutil.which("componentize-py")
    if found:
        return [found]
    return [sys.executable, "-m", "componentize_py"]


def _sources(src_dir: Path) -> list[Path]:
    files = []
    for path in sorted(src_dir.rglob("*")):
        if any(part in SKIP_DIRS for part in path.relative_to(src_dir).parts):
            continue
        if path.is_file() and path.suffix not in (".wasm", ".cwasm", ".pyc"):
            files.append(path)
    return files


def source_hash(src_dir: Path) -> str:
    h = hashlib.sha256()
    h.update(f"componentize-py={importlib.metadata.version('componentize-py')};world={WORLD}".encode())
    for path in _sources(src_dir):
        h.update(str(path.relative_to(src_dir)).encode() + b"\0")
        h.update(hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()


def cache_dir() -> Path:
    env = os.environ.get("EDGEFN_BUILD_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "edgefn" / "components"


def build(src_dir: Path, out: Path, *, progress: Progress | None = None) -> Path:
    """Runs componentize-py on `src_dir/app.py`; writes `out` atomically."""
    say = progress or (lambda _m: None)
    src_dir = Path(src_dir).resolve()
    out = Path(out).resolve()
    if not (src_dir / f"{APP_MODULE}.py").is_file():
        raise BuildError(f"{src_dir} has no {APP_MODULE}.py (a module defining class IncomingHandler)")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    cmd = [
        *_componentize_cmd(),
        "-d",
        str(wit_dir()),
        "-w",
        WORLD,
        "componentize",
        "-p",
        str(src_dir),
        APP_MODULE,
        "-o",
        str(tmp),
    ]
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
    say(f"componentize-py: {src_dir.name} -> {out.name} ({WORLD})")
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory() as work:
        proc = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0 or not tmp.exists():
        tmp.unlink(missing_ok=True)
        detail = (proc.stderr or proc.stdout).strip()
        raise BuildError(f"componentize-py failed for {src_dir}:\n{detail}")
    os.replace(tmp, out)
    say(f"built {out} ({out.stat().st_size / 1e6:.1f} MB) in {time.monotonic() - t0:.1f} s")
    return out


def ensure_built(src_dir: Path, out: Path, *, progress: Progress | None = None) -> Path:
    """Builds only when no cached artifact matches the sources' content hash."""
    say = progress or (lambda _m: None)
    digest = source_hash(Path(src_dir))
    cached = cache_dir() / f"{digest}.wasm"
    out = Path(out)
    if not cached.exists():
        cached.parent.mkdir(parents=True, exist_ok=True)
        build(src_dir, cached, progress=progress)
    else:
        say(f"{Path(src_dir).name}: up to date (cache {digest[:12]})")
    if out.exists() and out.stat().st_size == cached.stat().st_size and _same(out, cached):
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        os.link(cached, tmp)
    except OSError:
        shutil.copyfile(cached, tmp)
    os.replace(tmp, out)
    return out


def _same(a: Path, b: Path) -> bool:
    try:
        if os.path.samefile(a, b):
            return True
    except OSError:
        return False
    return hashlib.sha256(a.read_bytes()).digest() == hashlib.sha256(b.read_bytes()).digest()


def build_cli(argv: list[str]) -> int:
    """`edgefn build DIR -o FILE.wasm [--force]`; progress goes to stderr through rich."""
    from rich.console import Console

    parser = argparse.ArgumentParser(
        prog="edgefn build", description="Build a Python function into a component"
    )
    parser.add_argument("dir", type=Path, help="directory holding app.py")
    parser.add_argument("-o", "--output", type=Path, help="output .wasm (default: DIR/DIRNAME.wasm)")
    parser.add_argument("--force", action="store_true", help="build even if the cache has this source")
    args = parser.parse_args(argv)
    console = Console(stderr=True)
    out = args.output or args.dir / f"{args.dir.resolve().name}.wasm"
    try:
        with console.status(f"building {args.dir} ..."):
            if args.force:
                build(args.dir, out, progress=console.print)
            else:
                ensure_built(args.dir, out, progress=console.print)
    except BuildError as exc:
        console.print(f"[red]build failed:[/red] {exc}")
        return 1
    console.print(f"[green]ok[/green] {out}")
    return 0


if __name__ == "__main__":
    sys.exit(build_cli(sys.argv[1:]))
