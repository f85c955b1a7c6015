"""The one hook an invocation reports through: logs, metrics and trace propagation together.

The code that runs a function (`FunctionTarget.invoke`) calls `begin` before the guest starts,
hands the record's `guest_log` to the runtime as its log callback and its `transport(...)` as the
outbound transport, and calls `end` once when the body has ended (or the call failed). Keeping
this to one object means the invoking code does not have to know about rings, Prometheus or
OpenTelemetry.
"""

from __future__ import annotations

from collections.abc import Iterable

from gateway.functions.logs import FunctionLogs, ReportFigures
from gateway.functions.metrics import FunctionMetrics
from gateway.tracing import TracingTransport, parse_traceparent
from wasm_runtime import InvocationStats, OutboundTransport


class InvocationRecord:
    def __init__(
        self,
        telemetry: InvocationTelemetry,
        function: str,
        version: str,
        request_id: str,
        memory_mb: int,
        traceparent: bytes | None,
        secrets: tuple[str, ...],
    ) -> None:
        self.telemetry = telemetry
        self.function = function
        self.version = version
        self.request_id = request_id
        self.memory_mb = memory_mb
        self.traceparent = traceparent
        self.secrets = secrets
        self.ended = False

    def guest_log(self, stream: str, line: str) -> None:
        self.telemetry.logs.guest(self.function, self.version, self.request_id, stream, line, self.secrets)

    def transport(self, inner: OutboundTransport) -> OutboundTransport:
        """The outbound transport for this invocation: the caller's, plus `traceparent`."""
        if self.traceparent is None:
            return inner
        return TracingTransport(inner, self.traceparent)

    def end(
        self, stats: InvocationStats | None, *, status: int | None = None, error: BaseException | None = None
    ) -> None:
        """Write END and REPORT and settle the metrics; later calls do nothing."""
        if self.ended:
            return
        self.ended = True
        stats = stats or InvocationStats()
        report = ReportFigures(
            duration_ms=stats.duration_ms,
            memory_mb=self.memory_mb,
            max_memory_bytes=stats.max_memory_bytes,
            init_ms=stats.init_ms if stats.fresh_instance and stats.init_ms else None,
        )
        logs = self.telemetry.logs
        if error is not None:
            logs.platform(
                self.function,
                self.version,
                self.request_id,
                f"RequestId: {self.request_id} Error: {type(error).__name__}: {error}",
            )
        logs.end(self.function, self.version, self.request_id, report)
        metrics = self.telemetry.metrics
        if metrics is not None:
            name, version = self.function, self.version
            metrics.child(metrics.concurrent, name, version).dec()
            metrics.child(metrics.duration, name, version).observe(stats.duration_ms / 1000.0)
            if stats.max_memory_bytes:
                metrics.child(metrics.memory, name, version).observe(stats.max_memory_bytes)
            if error is not None or (status is not None and status >= 500):
                metrics.child(metrics.errors, name, version).inc()


class InvocationTelemetry:
    def __init__(self, logs: FunctionLogs, metrics: FunctionMetrics | None = None) -> None:
        self.logs = logs
        self.metrics = metrics

    def begin(
        self,
        function: str,
        version: str,
        request_id: str,
        *,
        memory_mb: int = 128,
        headers: Iterable[tuple[str, bytes]] = (),
        secrets: Iterable[str] = (),
    ) -> InvocationRecord:
        """Write START and count the invocation; `headers` are the guest request's (for the trace)."""
        traceparent = next((v for k, v in headers if k.lower() == "traceparent"), None)
        if traceparent is not None and parse_traceparent(traceparent) is None:
            traceparent = None
        self.logs.start(function, version, request_id)
        metrics = self.metrics
        if metrics is not None:
            metrics.child(metrics.invocations, function, version).inc()
            metrics.child(metrics.concurrent, function, version).inc()
        return InvocationRecord(self, function, version, request_id, memory_mb, traceparent, tuple(secrets))

    def throttled(self, function: str, version: str) -> None:
        if self.metrics is not None:
            self.metrics.child(self.metrics.throttles, function, version).inc()
