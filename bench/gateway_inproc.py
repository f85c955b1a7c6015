"""The Gateway's ASGI app alone, in process: CPU a request for given paths, without uvicorn, sockets
or a load generator sharing the cores.

    python -m bench.gateway_inproc CONFIG --path /hello-reuse --path /floor [--requests 2000] [--rounds 7]
    ... [--without logs|metrics]

CONFIG is an edgefn.toml (its data_dir holds the compile cache: a warm one makes the start quick).
Each path gets `GET` requests with one `host` header, one after another on one event loop, after
500 to warm up; for each round, the CPU of the serving thread (`time.thread_time`) a request, so
work on other threads (instances made ahead of need) is not counted. Prints one JSON object per
path: the median and every round in microseconds, and `runtime_us`, the part spent in
`Runtime.invoke` (for function routes), which splits a function request into the runtime and
the gateway around it. With --telemetry, also the CPU of one invocation's logs and metrics alone
(`InvocationTelemetry.begin`, two guest lines, `end`: the START, END and REPORT lines).

With --without logs|metrics, each round is run twice, with the feature and without it, in turn
(the order alternating), and `without_us` and `feature_us` (the median of the rounds' paired
differences: what the feature costs a request) are printed too. Pairs within one process see the
same machine; two processes, minutes apart, differ here by more than a feature costs. `logs`: the
gateway log's lines (the access line, a function's START, guest lines, END and REPORT as JSON;
its ring and followers stay); `metrics`: the Prometheus series a request updates.

Set beside the same routes over HTTP (bench.wasm, bench.proxy), the difference is uvicorn, the
sockets and the kernel.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from gateway.app import Gateway
from gateway.functions.logs import FunctionLogs
from gateway.functions.metrics import FunctionMetrics
from gateway.functions.telemetry import InvocationTelemetry
from gateway.observability import GatewayMetrics, LoopBatchedHandler
from gateway.server import configure_logging
from routes import load_config
from wasm_runtime import InvocationStats
from wasm_runtime.runtime import Runtime

WARM_UP = 500


class _InvokeClock:
    """CPU of the calling thread spent inside `Runtime.invoke`, summed."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.calls = 0
        self._invoke = Runtime.invoke

    def install(self) -> None:
        clock, invoke = self, self._invoke

        async def timed(runtime: Runtime, *args: Any, **kwargs: Any) -> Any:
            start = time.thread_time()
            try:
                return await invoke(runtime, *args, **kwargs)
            finally:
                clock.seconds += time.thread_time() - start
                clock.calls += 1

        Runtime.invoke = timed  # type: ignore[method-assign]

    def uninstall(self) -> None:
        Runtime.invoke = self._invoke  # type: ignore[method-assign]

    def reset(self) -> None:
        self.seconds, self.calls = 0.0, 0


def _scope(path: str) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"127.0.0.1")],
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 80),
    }


def _requester(gateway: Gateway, path: str, statuses: set[int]) -> Callable[[], Awaitable[None]]:
    """One GET of `path` through the app; the statuses it answered are added to `statuses`."""
    scope = _scope(path)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.add(message["status"])

    async def one() -> None:
        await gateway(dict(scope), receive, send)

    return one


async def _rounds(one: Callable[[], Awaitable[None]], requests: int, rounds: int) -> list[float]:
    out = []
    for _ in range(rounds):
        start = time.thread_time()
        for _ in range(requests):
            await one()
        out.append((time.thread_time() - start) / requests * 1e6)
        await asyncio.sleep(0.01)  # what the loop has queued (log flushes) runs between rounds
    return out


class _Untouched:
    """A metric child that counts nothing."""

    def inc(self, amount: float = 1) -> None:
        return None

    def dec(self, amount: float = 1) -> None:
        return None

    def observe(self, amount: float) -> None:
        return None


class _Feature:
    """One of the gateway's per-request features, switched off and on again between rounds."""

    def __init__(self, name: str, gateway: Gateway) -> None:
        self.name = name
        self._gateway = gateway
        self._level = logging.getLogger("edgefn").level
        self._in_flight = gateway.metrics.in_flight

    def off(self) -> None:
        if self.name == "logs":
            logging.getLogger("edgefn").setLevel(logging.WARNING)
        else:
            untouched = _Untouched()
            GatewayMetrics.observe = lambda self, ctx: None  # type: ignore[method-assign]
            FunctionMetrics.child = lambda self, metric, *labels: untouched  # type: ignore[method-assign]
            self._gateway.metrics.in_flight = untouched  # type: ignore[assignment]

    def on(self) -> None:
        if self.name == "logs":
            logging.getLogger("edgefn").setLevel(self._level)
        else:
            GatewayMetrics.observe = _OBSERVE  # type: ignore[method-assign]
            FunctionMetrics.child = _CHILD  # type: ignore[method-assign]
            self._gateway.metrics.in_flight = self._in_flight


_OBSERVE, _CHILD = GatewayMetrics.observe, FunctionMetrics.child


async def _paired(
    one: Callable[[], Awaitable[None]], feature: _Feature, requests: int, rounds: int
) -> tuple[list[float], list[float]]:
    """Rounds with the feature and without it, in turn (which goes first alternates)."""
    with_it: list[float] = []
    without: list[float] = []
    try:
        for r in range(rounds):
            for on in (True, False) if r % 2 else (False, True):
                if on:
                    feature.on()
                else:
                    feature.off()
                (with_it if on else without).extend(await _rounds(one, requests, 1))
    finally:
        feature.on()
    return with_it, without


async def measure_paths(
    config: Path, paths: list[str], requests: int, rounds: int, without: str | None = None
) -> list[dict[str, Any]]:
    gateway = Gateway(load_config(config, deployed=True))
    await gateway.startup()
    feature = _Feature(without, gateway) if without else None
    clock = _InvokeClock()
    clock.install()
    results = []
    try:
        for path in paths:
            statuses: set[int] = set()
            one = _requester(gateway, path, statuses)
            for _ in range(WARM_UP):
                await one()
            clock.reset()
            if feature is None:
                samples, bare = await _rounds(one, requests, rounds), []
            else:
                samples, bare = await _paired(one, feature, requests, rounds)
            result = {
                "path": path,
                "status": sorted(statuses),
                "us_per_request": round(statistics.median(samples), 1),
                "rounds_us": [round(s) for s in samples],
                "runtime_us": round(clock.seconds / clock.calls * 1e6, 1) if clock.calls else None,
            }
            if feature is not None:
                result["without"] = feature.name
                result["without_us"] = round(statistics.median(bare), 1)
                paired = [a - b for a, b in zip(samples, bare, strict=True)]
                result["feature_us"] = round(statistics.median(paired), 1)
            results.append(result)
    finally:
        clock.uninstall()
        await gateway.shutdown()
    return results


async def measure_telemetry(requests: int, rounds: int) -> dict[str, Any]:
    telemetry = InvocationTelemetry(FunctionLogs(), FunctionMetrics(CollectorRegistry()))
    traceparent = b"00-ea6803073ac3b1a4a78ea6803073ac3b-a4a78ea6803073ac-01"
    headers = [("host", b"127.0.0.1"), ("traceparent", traceparent)]
    stats = InvocationStats(duration_ms=0.5, max_memory_bytes=13 << 20)

    async def one() -> None:
        record = telemetry.begin("hello", "$LATEST", "4e7dc8d40ed32e0f0000000000000001", headers=headers)
        record.guest_log("stdout", "hello handled GET /hello-reuse")
        record.guest_log("stderr", "a line on stderr")
        record.end(stats, status=200)

    samples = await _rounds(one, requests, rounds)
    return {"telemetry_us": round(statistics.median(samples), 1), "rounds_us": [round(s, 1) for s in samples]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.gateway_inproc", description=__doc__)
    p.add_argument("config", type=Path)
    p.add_argument("--path", action="append", default=[], help="a path to request (repeatable)")
    p.add_argument("--requests", type=int, default=2000, help="requests a round")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--telemetry", action="store_true", help="also time one invocation's logs and metrics")
    p.add_argument(
        "--without",
        choices=("logs", "metrics"),
        help="rounds without this feature in turn with rounds with it: what it costs a request",
    )
    args = p.parse_args(argv)
    if args.requests < 1 or args.rounds < 1:
        p.error("--requests and --rounds must be >= 1")
    if not args.path and not args.telemetry:
        p.error("give --path at least once, or --telemetry")
    configure_logging("INFO")
    devnull = open(os.devnull, "w")  # noqa: SIM115 - the log's stream for the whole run
    for handler in logging.getLogger().handlers:
        if isinstance(handler, LoopBatchedHandler):
            handler.setStream(devnull)  # the lines are built and written as when serving, to nowhere
    if args.path:
        run = measure_paths(args.config, args.path, args.requests, args.rounds, args.without)
        for result in asyncio.run(run):
            print(json.dumps(result))
    if args.telemetry:
        print(json.dumps(asyncio.run(measure_telemetry(args.requests, args.rounds))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
