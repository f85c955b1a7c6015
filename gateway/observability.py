"""Phase 9: the access log line and the Prometheus metrics of every request.

Metrics live in a registry owned by the gateway instance rather than the process-global one, so
two gateways in one process (tests, workers) never share counters by accident.
"""

from __future__ import annotations

import json
import logging
import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from gateway.context import RequestContext

access_log = logging.getLogger("edgefn.access")


class GatewayMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.requests = Counter(
            "edgefn_requests_total",
            "Requests answered, by route and status.",
            ["route", "status"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "edgefn_request_duration_seconds",
            "Time from accept to the last body byte.",
            ["route"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=self.registry,
        )
        self.bytes_in = Counter(
            "edgefn_request_bytes_total", "Request body bytes.", ["route"], registry=self.registry
        )
        self.bytes_out = Counter(
            "edgefn_response_bytes_total", "Response body bytes.", ["route"], registry=self.registry
        )
        self.in_flight = Gauge("edgefn_requests_in_flight", "Requests being served.", registry=self.registry)

    def observe(self, ctx: RequestContext) -> None:
        route = ctx.route.name if ctx.route else "-"
        self.requests.labels(route, str(ctx.status)).inc()
        self.duration.labels(route).observe(ctx.elapsed_ms() / 1000.0)
        if ctx.bytes_in:
            self.bytes_in.labels(route).inc(ctx.bytes_in)
        if ctx.bytes_out:
            self.bytes_out.labels(route).inc(ctx.bytes_out)


def log_access(ctx: RequestContext, method: str, host: str, path: str, client: str) -> None:
    if not access_log.isEnabledFor(logging.INFO):
        return
    access_log.info(
        json.dumps(
            {
                "ts": round(time.time(), 3),
                "request_id": ctx.request_id,
                "client": client,
                "method": method,
                "host": host,
                "path": path,
                "route": ctx.route.name if ctx.route else None,
                "target": ctx.target,
                "status": ctx.status,
                "bytes_in": ctx.bytes_in,
                "bytes_out": ctx.bytes_out,
                "duration_ms": round(ctx.elapsed_ms(), 3),
                "error": ctx.error_code,
            },
            separators=(",", ":"),
        )
    )
