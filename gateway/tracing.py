"""W3C Trace Context: accept `traceparent`, make the gateway a span of it, pass it on.

Each request gets a span of its own. Its trace id is the client's (from a valid `traceparent`)
or a new one; its parent is the client's span. The request then carries
`traceparent: 00-<trace id>-<gateway span id>-<flags>` to whatever answers it: origins (the proxy
forwards request headers), functions (they receive it as a request header) and, through
`TracingTransport`, a function's outbound calls that did not set one themselves. `tracestate`
passes through untouched.

Spans are exported with OpenTelemetry's OTLP/HTTP exporter only when `OTEL_EXPORTER_OTLP_ENDPOINT`
(or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set; otherwise ids are made here and nothing is sent.
The provider belongs to the gateway instance, never the process-global one.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import threading
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from wasm_runtime import OutboundRequest, OutboundResponse, OutboundTimeouts, OutboundTransport

log = logging.getLogger("edgefn.tracing")

TRACEPARENT = b"traceparent"
_TRACEPARENT_RE = re.compile(r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$")
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16


@dataclass(frozen=True, slots=True)
class TraceParent:
    trace_id: str
    parent_id: str
    flags: str = "01"

    @property
    def sampled(self) -> bool:
        return bool(int(self.flags, 16) & 1)

    def header(self) -> bytes:
        return f"00-{self.trace_id}-{self.parent_id}-{self.flags}".encode()


def parse_traceparent(value: bytes | str) -> TraceParent | None:
    """A valid version-00 (or later, read as 00) traceparent, or None (then a new trace starts)."""
    text = value.decode("latin-1") if isinstance(value, bytes) else value
    m = _TRACEPARENT_RE.match(text.strip())
    if m is None:
        return None
    version, trace_id, parent_id, flags, rest = m.groups()
    if version == "ff" or (version == "00" and rest) or trace_id == _ZERO_TRACE or parent_id == _ZERO_SPAN:
        return None
    return TraceParent(trace_id, parent_id, flags)


class _RandomPool:
    """Bytes from the OS's CSPRNG (`secrets.token_bytes`), drawn BATCH at a time.

    W3C Trace Context asks for trace ids (Level 2: at least their right-most 7 bytes, for the
    `random` flag) and span ids that are random or pseudo-random and globally unique. Every id
    here is 16 or 8 bytes straight from the OS generator, as with `secrets.token_hex` per id, only
    one system call serves ~170 requests instead of two per request (~4 % of a small request's
    CPU). The pool is dropped in a forked child, so two processes never hand out the same bytes.
    """

    BATCH = 4096

    def __init__(self) -> None:
        self._lock = threading.Lock()  # gateways on several threads (tests, embedders) share it
        self._drop()
        os.register_at_fork(after_in_child=self._drop)

    def _drop(self) -> None:
        self._lock = threading.Lock()
        self._buf = b""
        self._at = 0

    def hex(self, n: int) -> str:
        with self._lock:
            at = self._at
            if at + n > len(self._buf):
                self._buf, at = secrets.token_bytes(self.BATCH), 0
            self._at = at + n
            return self._buf[at : at + n].hex()


_random = _RandomPool()


def new_trace_id() -> str:
    """32 random hex digits, never all zero (the spec's invalid value)."""
    while (trace_id := _random.hex(16)) == _ZERO_TRACE:
        pass
    return trace_id


def new_span_id() -> str:
    """16 random hex digits, never all zero."""
    while (span_id := _random.hex(8)) == _ZERO_SPAN:
        pass
    return span_id


class Span:
    """The gateway's span of one request; `end` is safe to call more than once."""

    def __init__(self, trace_id: str, span_id: str, flags: str, otel: Any = None) -> None:
        self.trace_id = trace_id
        self.span_id = span_id
        self.flags = flags
        self._otel = otel

    @property
    def traceparent(self) -> bytes:
        return TraceParent(self.trace_id, self.span_id, self.flags).header()

    def end(self, status: int, attributes: Mapping[str, str | int | float] | None = None) -> None:
        span, self._otel = self._otel, None
        if span is None:
            return
        from opentelemetry.trace import Status, StatusCode

        span.set_attribute("http.response.status_code", status)
        for key, value in (attributes or {}).items():
            span.set_attribute(key, value)
        if status >= 500:
            span.set_status(Status(StatusCode.ERROR))
        span.end()


class Tracer:
    def __init__(self, env: Mapping[str, str], service_name: str = "edgefn") -> None:
        self._provider: Any = None
        self._tracer: Any = None
        endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or (
            env["OTEL_EXPORTER_OTLP_ENDPOINT"].rstrip("/") + "/v1/traces"
            if env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
            else None
        )
        if endpoint:
            self._start_export(endpoint, env.get("OTEL_SERVICE_NAME", service_name), env)

    @property
    def exporting(self) -> bool:
        return self._tracer is not None

    def _start_export(self, endpoint: str, service: str, env: Mapping[str, str]) -> None:
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
            from opentelemetry.sdk.resources import Resource
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import BatchSpanProcessor
        except ImportError as exc:
            log.warning("OTEL_EXPORTER_OTLP_ENDPOINT is set but OpenTelemetry is not installed: %s", exc)
            return
        provider = TracerProvider(resource=Resource.create({"service.name": service}))
        delay_ms = float(env.get("OTEL_BSP_SCHEDULE_DELAY", "1000"))
        provider.add_span_processor(
            BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint), schedule_delay_millis=delay_ms)
        )
        self._provider = provider
        self._tracer = provider.get_tracer("edgefn.gateway")
        log.info("exporting spans over OTLP/HTTP to %s", endpoint)

    def start(self, name: str, incoming: TraceParent | None, attributes: Mapping[str, Any]) -> Span:
        if self._tracer is None:
            if incoming is None:
                return Span(new_trace_id(), new_span_id(), "01")
            return Span(incoming.trace_id, new_span_id(), incoming.flags)
        from opentelemetry import trace
        from opentelemetry.context import Context

        context = Context()
        if incoming is not None:
            parent = trace.SpanContext(
                trace_id=int(incoming.trace_id, 16),
                span_id=int(incoming.parent_id, 16),
                is_remote=True,
                trace_flags=trace.TraceFlags(int(incoming.flags, 16)),
            )
            context = trace.set_span_in_context(trace.NonRecordingSpan(parent), context)
        span = self._tracer.start_span(
            name, context=context, kind=trace.SpanKind.SERVER, attributes=dict(attributes)
        )
        sc = span.get_span_context()
        return Span(f"{sc.trace_id:032x}", f"{sc.span_id:016x}", f"{int(sc.trace_flags):02x}", span)

    def accept(self, method: str, host: str, path: str, headers: list[tuple[bytes, bytes]]) -> Span:
        """Start the request's span and make `headers` carry it (in place) as `traceparent`."""
        incoming = None
        for k, v in headers:
            if k == TRACEPARENT:
                incoming = parse_traceparent(v)
                break
        span = self.start(
            f"{method} {host}",
            incoming,
            {"http.request.method": method, "server.address": host, "url.path": path},
        )
        headers[:] = [(k, v) for k, v in headers if k != TRACEPARENT]
        headers.append((TRACEPARENT, span.traceparent))
        return span

    def shutdown(self) -> None:
        """Flush what is batched (blocking; call it off the event loop)."""
        provider, self._provider, self._tracer = self._provider, None, None
        if provider is not None:
            provider.shutdown()


class TracingTransport:
    """A function's outbound transport that adds the invocation's `traceparent` when absent."""

    def __init__(self, inner: OutboundTransport, traceparent: bytes) -> None:
        self.inner = inner
        self.traceparent = traceparent

    async def send(self, request: OutboundRequest, timeouts: OutboundTimeouts) -> OutboundResponse:
        if not any(k.lower() == "traceparent" for k, _ in request.headers):
            request = replace(request, headers=[*request.headers, ("traceparent", self.traceparent)])
        return await self.inner.send(request, timeouts)

    async def aclose(self) -> None:
        """The inner transport is shared; its owner closes it."""
