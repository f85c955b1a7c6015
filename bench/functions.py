"""What resolving a function reference costs per request (gateway/functions/service.py).

    .venv/bin/python -m bench.functions

Measures `Functions.pick(reference)` (the step before a function runs) on a real SQLite registry:
on the warm path, for a config function, $LATEST, a version and a weighted alias, with the
registry's revision read at its natural rate (every REFRESH_S, off the event loop); the cost of one
forced revision read (`changed()`, as after an admin change); and a registry change followed by
re-resolving three targets (reused, since what they were built from did not change). The wasm
invocation itself is not included: see bench/wasm.py for that.
"""

from __future__ import annotations

import asyncio
import os
import platform
import tempfile
import time
from pathlib import Path

from gateway.functions.registry import FunctionConfig, open_registry
from gateway.functions.service import REFRESH_S, Functions
from routes import load_config
from wasm_runtime import Runtime

ROOT = Path(__file__).resolve().parent.parent
HELLO = ROOT / "examples" / "hello" / "hello.wasm"
COMPILED = Path(os.environ.get("EDGEFN_TEST_COMPILED", Path.home() / ".cache" / "edgefn" / "compiled"))


async def measure(service: Functions, reference: str, seconds: float) -> float:
    """Mean µs per pick over `seconds` (several revision reads fall inside)."""
    await service.pick(reference)
    n = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in range(1000):
            await service.pick(reference)
        n += 1000
    return (time.perf_counter() - start) / n * 1e6


async def run(tmp: Path) -> None:
    data = tmp / "data"
    data.mkdir()
    COMPILED.mkdir(parents=True, exist_ok=True)
    (data / "compiled").symlink_to(COMPILED, target_is_directory=True)
    (tmp / "edgefn.toml").write_text(f'[node]\ndata_dir = "{data}"\n[functions.cfg]\ncomponent = "{HELLO}"\n')
    config = load_config(tmp / "edgefn.toml")
    registry = open_registry(config.node, config.functions)
    registry.deploy("hello", HELLO)
    registry.publish("hello")
    registry.configure("hello", FunctionConfig(env=(("A", "1"),)))
    registry.publish("hello")
    registry.set_alias("hello", "live", 1, {2: 0.3})
    runtime = Runtime(data)
    try:
        service = Functions(config, runtime, registry)
        await service.load_all()
        print(f"python {platform.python_version()}, {os.cpu_count()} cpus, load {os.getloadavg()[0]:.1f}")
        print(f"| reference | µs per pick (revision read every {REFRESH_S * 1000:.0f} ms included) |")
        print("| --- | --- |")
        for reference in ("cfg", "hello", "hello:2", "hello:live"):
            print(f"| `{reference}` | {await measure(service, reference, 2.0):.2f} |")
        n = 300
        start = time.perf_counter()
        for _ in range(n):
            service.changed()
            await service.pick("hello:live")
        print(f"\nforced revision read + pick: {(time.perf_counter() - start) / n * 1e6:.0f} µs")
        n = 30
        start = time.perf_counter()
        for i in range(n):
            registry.set_secret("unrelated", str(i))
            service.changed()
            for reference in ("hello:live", "hello:1", "hello:2"):
                await service.pick(reference)
        per = (time.perf_counter() - start) / n * 1000
        print(f"registry write + new revision + 3 references re-resolved (targets reused): {per:.2f} ms")
    finally:
        await runtime.aclose()
        registry.close()


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="edgefn-bench-functions-") as tmp:
        asyncio.run(run(Path(tmp)))


if __name__ == "__main__":
    main()
