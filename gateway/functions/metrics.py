"""Prometheus metrics of functions, registered into the gateway's own registry.

By function and executed version: invocations, errors, throttles, histograms of duration and of
memory used, and concurrent executions. By function only (an event has no version until it runs):
the async queue's depth, its oldest event's age and the dead-letter queue's size, read from the
queue's database at scrape time, so they are right whichever worker process enqueued the events.
Of the process's wasm runtime: its guest threads and run gate, how many invocations ran on the
event loop's thread or moved from it, and its instance slots, read from `Runtime.stats()` at scrape
time.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from gateway.observability import MetricChildren

log = logging.getLogger("edgefn.metrics")

DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
MiB = 1 << 20
# memory_mb runs from 16 to 10240: set beside it, these say how much headroom a function has
MEMORY_BUCKETS = tuple(n * MiB for n in (8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 10240))

# function -> (events waiting or running, oldest such event's creation time, DLQ size)
QueueStats = Callable[[], dict[str, tuple[int, float, int]]]
RuntimeStats = Callable[[], dict[str, int]]  # wasm_runtime.Runtime.stats

# Runtime.stats() key -> (metric, help, counter?)
RUNTIME_FIGURES = {
    "running": ("edgefn_wasm_invocations_running", "Invocations holding a guest thread slot now.", False),
    "waiting_for_thread": (
        "edgefn_wasm_waiting_for_thread",
        "Invocations waiting for a guest thread slot.",
        False,
    ),
    "executing": ("edgefn_wasm_executing", "Guests executing now (the run gate's places taken).", False),
    "waiting_to_execute": ("edgefn_wasm_waiting_to_execute", "Invocations in line for the run gate.", False),
    "guest_threads": ("edgefn_wasm_guest_threads", "Guest threads made (idle ones are kept).", False),
    "throttled": (
        "edgefn_wasm_throttled",
        "Invocations that found no guest thread within their timeout.",
        True,
    ),
    "ran_inline": ("edgefn_wasm_ran_inline", "Invocations run on the event loop's thread.", True),
    "moved_to_thread": (
        "edgefn_wasm_moved_to_thread",
        "Runs on the event loop's thread dropped and run again on a guest thread.",
        True,
    ),
    "instance_slots_in_use": (
        "edgefn_wasm_instance_slots_in_use",
        "Instance slots holding an instance now (fresh instances whose memory stays mapped).",
        False,
    ),
    "made_in_slots": ("edgefn_wasm_made_in_slots", "Fresh instances made in an instance slot.", True),
}


class FunctionMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        labels = ["function", "version"]
        self.invocations = Counter(
            "edgefn_function_invocations_total",
            "Function invocations started (synchronous and asynchronous).",
            labels,
            registry=registry,
        )
        self.errors = Counter(
            "edgefn_function_errors_total",
            "Invocations that failed: status >= 500, trap, timeout.",
            labels,
            registry=registry,
        )
        self.throttles = Counter(
            "edgefn_function_throttles_total",
            "Invocations refused at the function's reserved concurrency (429).",
            labels,
            registry=registry,
        )
        self.duration = Histogram(
            "edgefn_function_duration_seconds",
            "Time the function ran, as REPORT's Duration.",
            labels,
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self.memory = Histogram(
            "edgefn_function_memory_used_bytes",
            "The guest's linear memory when its handler returned, as REPORT's Max Memory Used "
            "(absent from invocations that trapped or timed out).",
            labels,
            buckets=MEMORY_BUCKETS,
            registry=registry,
        )
        self.concurrent = Gauge(
            "edgefn_function_concurrent_executions",
            "Invocations running now in this process.",
            labels,
            registry=registry,
        )
        self._queue: _QueueCollector | None = None
        self._runtime: _RuntimeCollector | None = None
        self._children = MetricChildren()

    def child(self, metric: Counter | Gauge | Histogram, function: str, version: str) -> Any:
        """`metric.labels(function, version)`, looked up once (see MetricChildren)."""
        return self._children.get(metric, function, version)

    def watch_queue(self, stats: QueueStats) -> None:
        """Report the async queue's figures at every scrape (once per registry)."""
        if self._queue is None:
            self._queue = _QueueCollector(stats)
            self.registry.register(self._queue)
        else:
            self._queue.stats = stats

    def unwatch_queue(self) -> None:
        if self._queue is not None:
            self.registry.unregister(self._queue)
            self._queue = None

    def watch_runtime(self, stats: RuntimeStats) -> None:
        """Report the wasm runtime's figures at every scrape."""
        if self._runtime is None:
            self._runtime = _RuntimeCollector(stats)
            self.registry.register(self._runtime)

    def unwatch_runtime(self) -> None:
        if self._runtime is not None:
            self.registry.unregister(self._runtime)
            self._runtime = None


class _RuntimeCollector(Collector):
    def __init__(self, stats: RuntimeStats) -> None:
        self.stats = stats

    def describe(self) -> list[GaugeMetricFamily]:
        return []

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        figures = self.stats()
        for key, (name, text, counter) in RUNTIME_FIGURES.items():
            family = CounterMetricFamily if counter else GaugeMetricFamily
            yield family(name, text, value=figures.get(key, 0))


class _QueueCollector(Collector):
    def __init__(self, stats: QueueStats) -> None:
        self.stats = stats

    def describe(self) -> list[GaugeMetricFamily]:
        return []  # no describe-time collection: the registry must not read the database at register

    def collect(self) -> Iterator[GaugeMetricFamily]:
        depth = GaugeMetricFamily(
            "edgefn_async_queue_depth", "Event invocations waiting or running.", labels=["function"]
        )
        age = GaugeMetricFamily(
            "edgefn_async_queue_oldest_age_seconds",
            "Age of the oldest event waiting or running (0 when none).",
            labels=["function"],
        )
        dlq = GaugeMetricFamily("edgefn_dlq_size", "Events in the dead-letter queue.", labels=["function"])
        try:
            figures = self.stats()
        except Exception:
            log.exception("could not read the async queue for /metrics")
            figures = {}
        now = time.time()
        for function, (pending, oldest, dead) in sorted(figures.items()):
            depth.add_metric([function], pending)
            age.add_metric([function], max(0.0, now - oldest) if pending and oldest else 0.0)
            dlq.add_metric([function], dead)
        yield depth
        yield age
        yield dlq
