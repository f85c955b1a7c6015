"""`Runtime.invoke` alone, in a process of its own: the wasm runtime's share of a hello request.

    python -m bench.wasm_inproc DATA_DIR [--runs 200]
    python -m bench.wasm_inproc DATA_DIR --concurrency 1,4,16,64 [--duration 3] [--max-executing K]
    ... [--gateway-headers] [--no-epoch] [--instance-slots N]
    python -m bench.wasm_inproc DATA_DIR --calls [--runs 500] [--gateway-headers]

Sequential invocations of examples/hello/hello.wasm through `wasm_runtime.Runtime` (no HTTP, no
gateway), with a fresh instance each time and with a reused one; prints one JSON object of medians
in milliseconds. Set beside the same request over HTTP and beside a gateway-only route, it splits
edgefn's hello latency into runtime, gateway and transport. DATA_DIR holds the compile cache, so a
warm one (the bench's) makes the start quick.

With --concurrency, N callers each invoke (reused instance) in a closed loop for --duration seconds;
for each N: req/s, p50, and the process's CPU and voluntary context switches per request, which
tell whether a drop at high concurrency is contention (they rise) or a loaded machine (they do not).

The request carries one header (host); with --gateway-headers, the ones the gateway forwards to a
function too (hello echoes them all, so the guest's work grows with them), as over HTTP.

With --no-epoch, the engine has no epoch interruption, as `wasmtime serve` without `-W timeout`:
set beside a run without it, what edgefn's time limit costs a guest (its compiled code checks the
epoch at each function entry and loop back-edge). Never so when serving: nothing could stop a guest.

With --instance-slots N, the Runtime has N instance slots (0: none), where fresh instances are
made with their memory kept mapped (wasm_runtime/_slots.py); the default is the runtime's own.

With --calls: the Python functions and C functions called from Python (`sys.setprofile`'s "call"
and "c_call", on every thread) a reused invocation makes, averaged over --runs: a count of the
host's work that, unlike time, this machine's noise does not move.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import resource
import statistics
import sys
import threading
import time
from pathlib import Path

from wasmtime import Config

from wasm_runtime import GuestRequest, Limits, Runtime, runtime
from wasm_runtime._slots import DEFAULT_SLOTS

HELLO = Path(__file__).resolve().parent.parent / "examples" / "hello" / "hello.wasm"
HOST = [("host", b"bench")]
# What gateway.functions.target.guest_request adds to a wrk request (values of the same length).
GATEWAY_HEADERS = [
    *HOST,
    ("x-edgefn-node", b"a"),
    ("x-request-id", b"4e7dc8d40ed32e0f0000000000000001"),
    ("traceparent", b"00-ea6803073ac3b1a4a78ea6803073ac3b-a4a78ea6803073ac-01"),
    ("x-forwarded-for", b"127.0.0.1"),
    ("x-forwarded-proto", b"http"),
    ("x-forwarded-host", b"127.0.0.1:18280"),
    ("via", b"1.1 edgefn-a"),
]


def _discard(_stream: str, _line: str) -> None:
    """The guest's log lines go nowhere: this measures the runtime, not a log sink."""


async def _invoke(
    runtime: Runtime, component: object, reuse: int, headers: list[tuple[str, bytes]] = HOST
) -> tuple[float, float]:
    request = GuestRequest("GET", "http", "bench", "/hello", headers, None)
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


async def measure(
    data_dir: Path, runs: int, headers: list[tuple[str, bytes]] = HOST, instance_slots: int = DEFAULT_SLOTS
) -> dict[str, float]:
    runtime = Runtime(data_dir, instance_slots=instance_slots)
    try:
        component = await runtime.load(HELLO)
        out: dict[str, float] = {}
        for mode, reuse in (("fresh", 0), ("reuse", 1000)):
            for _ in range(max(5, runs // 10)):
                await _invoke(runtime, component, reuse, headers)
            samples = [await _invoke(runtime, component, reuse, headers) for _ in range(runs)]
            out[f"{mode}_ms"] = statistics.median(s[0] for s in samples)
            if mode == "fresh":
                out["instantiate_ms"] = statistics.median(s[1] for s in samples)
        return out
    finally:
        await runtime.aclose()


async def concurrent(
    data_dir: Path,
    levels: list[int],
    duration: float,
    max_executing: int | None,
    headers: list[tuple[str, bytes]] = HOST,
) -> list[dict[str, float]]:
    runtime = Runtime(data_dir, max_executing=max_executing)
    try:
        component = await runtime.load(HELLO)
        out: list[dict[str, float]] = []
        for n in levels:
            samples: list[float] = []

            async def caller(until: float, into: list[float]) -> None:
                while time.perf_counter() < until:
                    into.append((await _invoke(runtime, component, 1000, headers))[0])

            await asyncio.gather(*(caller(time.perf_counter() + 0.5, []) for _ in range(n)))  # warm pool
            switches = resource.getrusage(resource.RUSAGE_SELF).ru_nvcsw
            wall, cpu = time.perf_counter(), time.process_time()
            await asyncio.gather(*(caller(wall + duration, samples) for _ in range(n)))
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            switches = resource.getrusage(resource.RUSAGE_SELF).ru_nvcsw - switches
            out.append({
                "concurrency": n,
                "req_per_s": round(len(samples) / wall, 1),
                "p50_ms": round(statistics.median(samples), 2),
                "cpu_ms_per_req": round(cpu * 1000 / len(samples), 2),
                "switches_per_req": round(switches / len(samples), 1),  # voluntary context switches
            })
        return out
    finally:
        await runtime.aclose()


async def count_calls(data_dir: Path, runs: int, headers: list[tuple[str, bytes]]) -> dict[str, float]:
    runtime = Runtime(data_dir)
    calls = 0

    def count(_frame: object, event: str, _arg: object) -> None:
        nonlocal calls
        if event in ("call", "c_call"):
            calls += 1

    try:
        component = await runtime.load(HELLO)
        for _ in range(50):
            await _invoke(runtime, component, 1000, headers)
        sys.setprofile(count)
        threading.setprofile(count)
        try:
            for _ in range(runs):
                await _invoke(runtime, component, 1000, headers)
        finally:
            sys.setprofile(None)
            threading.setprofile(None)  # type: ignore[arg-type]
        return {"calls_per_invoke": round(calls / runs, 1)}
    finally:
        await runtime.aclose()


def _levels(text: str) -> list[int]:
    try:
        levels = [int(x) for x in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--concurrency takes numbers like 1,4,64, not {text!r}") from None
    if not levels or min(levels) < 1:
        raise argparse.ArgumentTypeError(f"--concurrency levels must be >= 1, not {text!r}")
    return levels


def _without_epoch() -> None:
    """The runtime's engine without epoch checks, compiled and cached under a key of its own."""
    engine_config = runtime._engine_config

    def config() -> tuple[Config, str]:
        cfg, key = engine_config()
        cfg.epoch_interruption = False
        return cfg, hashlib.sha256(f"{key};no-epoch".encode()).hexdigest()[:16]

    runtime._engine_config = config


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.wasm_inproc", description=__doc__)
    p.add_argument("data_dir", type=Path)
    p.add_argument("--runs", type=int, default=200)
    p.add_argument("--concurrency", type=_levels, help="closed-loop callers, e.g. 1,4,16,64 (reused)")
    p.add_argument("--duration", type=float, default=3.0, help="seconds per --concurrency level")
    p.add_argument("--max-executing", type=int, help="the Runtime's max_executing (default: its own)")
    p.add_argument("--gateway-headers", action="store_true", help="send the headers the gateway forwards")
    p.add_argument("--calls", action="store_true", help="count the Python and C calls a reused invoke makes")
    p.add_argument(
        "--no-epoch",
        action="store_true",
        help="an engine without epoch interruption, as `wasmtime serve` runs by default: what the "
        "time limit costs (a guest then cannot be stopped; never so in edgefn)",
    )
    p.add_argument(
        "--instance-slots",
        type=int,
        default=DEFAULT_SLOTS,
        help=f"the Runtime's instance slots for fresh instances (default {DEFAULT_SLOTS}; 0: none)",
    )
    args = p.parse_args(argv)
    if args.no_epoch:
        _without_epoch()
    if args.runs < 1:
        p.error("--runs must be >= 1")
    if args.duration <= 0:
        p.error("--duration must be > 0")
    if not HELLO.exists():
        print(json.dumps({"error": f"missing {HELLO}: run `make examples`"}))
        return 1
    headers = GATEWAY_HEADERS if args.gateway_headers else HOST
    if args.calls:
        print(json.dumps(asyncio.run(count_calls(args.data_dir, args.runs, headers))))
    elif args.concurrency:
        run = concurrent(args.data_dir, args.concurrency, args.duration, args.max_executing, headers)
        print(json.dumps(asyncio.run(run)))
    else:
        print(json.dumps(asyncio.run(measure(args.data_dir, args.runs, headers, args.instance_slots))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
