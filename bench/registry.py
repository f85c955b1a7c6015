"""What the registry's changes cost: one SQLite transaction (WAL, synchronous=FULL) per change.

    .venv/bin/python -m bench.registry [DATA_DIR]

Measures, on a real `SqliteStore` in DATA_DIR (default: a temporary directory, so the disk under
/tmp): deploy of a 1 MB and a 10 MB file (sha256, blob copy + fsync + rename, document commit),
configure, publish, set_alias, create_url, the reads `get` and `resolve`, and set_alias from 4
processes at once on one function document (compare-and-set retries included). Each figure is the
median of N runs in ms. Durability costs one fsync per commit, so the disk sets most of these.
"""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from gateway.functions.registry import FunctionConfig, Registry
from gateway.functions.registry_sqlite import SqliteStore

ROOT = Path(__file__).resolve().parent.parent


def median_ms(action: Callable[[int], object], n: int) -> float:
    times = []
    for i in range(n):
        start = time.perf_counter()
        action(i)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def contended(data_dir: Path, workers: int, per_worker: int) -> float:
    """Wall-clock ms per change with `workers` processes changing one function document."""
    start = time.perf_counter()
    children = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.registry.workers",
                "aliases",
                str(data_dir),
                str(w),
                str(per_worker),
            ],
            cwd=ROOT,
        )
        for w in range(workers)
    ]
    (data_dir / "go").touch()
    for child in children:
        child.wait(timeout=600)
    return (time.perf_counter() - start) * 1000 / (workers * per_worker * 2)


def main() -> None:
    base = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="bench-registry-"))
    data_dir = base / "data"
    registry = Registry(SqliteStore(data_dir))
    files = {}
    for size_mb in (1, 10):
        for i in range(5):
            path = base / f"code-{size_mb}-{i}.wasm"
            path.write_bytes(os.urandom(size_mb << 20))
            files[(size_mb, i)] = path
    rows = [
        ("deploy 1 MB (new blob)", median_ms(lambda i: registry.deploy("f", files[(1, i)]), 5)),
        ("deploy 10 MB (new blob)", median_ms(lambda i: registry.deploy("f", files[(10, i)]), 5)),
        ("deploy 1 MB (blob known)", median_ms(lambda i: registry.deploy("f", files[(1, i)]), 5)),
        ("configure", median_ms(lambda i: registry.configure("f", FunctionConfig(memory_mb=128 + i)), 50)),
        (
            "publish",
            median_ms(
                lambda i: (registry.configure("f", FunctionConfig(timeout_s=1 + i)), registry.publish("f")),
                20,
            ),
        ),
        (
            "set_alias",
            median_ms(lambda i: registry.set_alias("f", "live", 1 + i % 20, {1 + (i + 1) % 20: 0.1}), 50),
        ),
        (
            "create_url",
            median_ms(
                lambda i: registry.set_alias("f", f"a{i}", 1) and registry.create_url("f", f"a{i}"), 20
            ),
        ),
        ("get (read)", median_ms(lambda i: registry.get("f"), 200)),
        ("resolve NAME:ALIAS (read)", median_ms(lambda i: registry.resolve("f:live"), 200)),
    ]
    registry.deploy("shared", files[(1, 0)])
    registry.publish("shared")
    registry.close()
    rows.append(("4 processes, per change (CAS)", contended(data_dir, 4, 25)))
    print(f"# bench.registry on {platform.node()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}")
    print(f"# data_dir {data_dir}")
    for label, ms in rows:
        print(f"{label:34s} {ms:8.2f} ms")


if __name__ == "__main__":
    main()
