"""`Runtime.invoke` alone, in a process of its own: the wasm runtime's share of a hello request.

    python -m bench.wasm_inproc DATA_DIR [--runs 200]

Sequential invocations of examples/hello/hello.wasm through `wasm_runtime.Runtime` (no HTTP, no
gateway), with a fresh instance each time and with a reused one; prints one JSON object of medians
in milliseconds. Set beside the same request over HTTP and beside a gateway-only route, it splits
edgefn's hello latency into runtime, gateway and transport. DATA_DIR holds the compile cache, so a
warm one (the bench's) makes the start quick.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

from wasm_runtime import GuestRequest, Limits, Runtime

HELLO = Path(__file__).resolve().parent.parent / "examples" / "hello" / "hello.wasm"


def _discard(_stream: str, _line: str) -> None:
    """The guest's log lines go nowhere: this measures the runtime, not a log sink."""


async def _invoke(runtime: Runtime, component: object, reuse: int) -> tuple[float, float]:
    request = GuestRequest("GET", "http", "bench", "/hello", [("host", b"bench")], None)
    start = time.perf_counter()
    response = await runtime.invoke(
        component,  # type: ignore[arg-type]
        request,
        limits=Limits(instance_reuse=reuse),
        log=_discard,
    )
    async for _ in response.body:
        pass
    return (time.perf_counter() - start) * 1000, response.stats.init_ms


async def measure(data_dir: Path, runs: int) -> dict[str, float]:
    runtime = Runtime(data_dir)
    try:
        component = await runtime.load(HELLO)
        out: dict[str, float] = {}
        for mode, reuse in (("fresh", 0), ("reuse", 1000)):
            for _ in range(max(5, runs // 10)):
                await _invoke(runtime, component, reuse)
            samples = [await _invoke(runtime, component, reuse) for _ in range(runs)]
            out[f"{mode}_ms"] = statistics.median(s[0] for s in samples)
            if mode == "fresh":
                out["instantiate_ms"] = statistics.median(s[1] for s in samples)
        return out
    finally:
        await runtime.aclose()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.wasm_inproc", description=__doc__)
    p.add_argument("data_dir", type=Path)
    p.add_argument("--runs", type=int, default=200)
    args = p.parse_args(argv)
    if args.runs < 1:
        p.error("--runs must be >= 1")
    if not HELLO.exists():
        print(json.dumps({"error": f"missing {HELLO}: run `make examples`"}))
        return 1
    print(json.dumps(asyncio.run(measure(args.data_dir, args.runs))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
