"""Phase 9: the access log line and the Prometheus metrics of every request.

Metrics live in a registry owned by the gateway instance rather than the process-global one, so
two gateways in one process (tests, workers) never share counters by accident.
"""

from __future__ import annotations

import asyncio
import logging
import time
from asyncio import _get_running_loop as asyncio_running_loop
from json.encoder import encode_basestring_ascii as _q
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from gateway.context import RequestContext

access_log = logging.getLogger("edgefn.access")


class MetricChildren:
    """`metric.labels(*values)`, looked up once per set of values: `labels()` validates and
    locks on every call (~3 us, eight a function request). Made on first use, as `labels()`
    makes it, so a series nobody touched (errors of a function that never failed) stays absent."""

    def __init__(self) -> None:
        self._children: dict[tuple[Any, ...], Any] = {}

    def get(self, metric: Counter | Gauge | Histogram, *values: str) -> Any:
        key = (id(metric), *values)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*values)
        return found


class GatewayMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self._children = MetricChildren()
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
        child = self._children.get
        child(self.requests, route, str(ctx.status)).inc()
        child(self.duration, route).observe(ctx.elapsed_ms() / 1000.0)
        if ctx.bytes_in:
            child(self.bytes_in, route).inc(ctx.bytes_in)
        if ctx.bytes_out:
            child(self.bytes_out, route).inc(ctx.bytes_out)


def log_access(ctx: RequestContext, method: str, host: str, path: str, client: str) -> None:
    """One JSON line per request, with the same fields, order and escaping as
    `json.dumps(..., separators=(",", ":"))` (ASCII-only), built from a template: the dict and
    the encoder were half of this line's cost, `logging`'s record machinery the other half."""
    if not access_log.isEnabledFor(logging.INFO):
        return
    route = ctx.route.name if ctx.route else None
    error = ctx.error_code
    line = (
        f'{{"ts":{round(time.time(), 3)!r},"request_id":{_q(ctx.request_id)},"client":{_q(client)},'
        f'"method":{_q(method)},"host":{_q(host)},"path":{_q(path)},'
        f'"route":{"null" if route is None else _q(route)},"target":{_q(ctx.target)},'
        f'"status":{ctx.status:d},"bytes_in":{ctx.bytes_in:d},"bytes_out":{ctx.bytes_out:d},'
        f'"duration_ms":{round(ctx.elapsed_ms(), 3)!r},"error":{"null" if error is None else _q(error)}}}'
    )
    emit_line(access_log, line)


class LoopBatchedHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The gateway's log handler: a StreamHandler whose lines written on an event loop's thread
    leave together, once per pass of the loop.

    A function request writes six lines (START, its guest's, END, REPORT, the access log), and
    each write is a system call during which a guest's thread took the GIL from the loop: at the
    default INFO level the loop spent ~0.3 ms more per hello than at WARNING. Lines from other
    threads, and any line once the loop is gone, are written at once (after what is pending, so
    the order holds); `flush` (and `logging.shutdown` at exit) writes what is pending."""

    def __init__(self, stream: Any = None) -> None:
        super().__init__(stream)
        self._pending: list[str] = []
        self._flush_on: asyncio.AbstractEventLoop | None = None  # the loop a flush is queued on

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)
            return
        self.write_line(line)

    def write_line(self, line: str) -> None:
        loop = asyncio_running_loop()
        with self.lock:  # type: ignore[union-attr]
            self._pending.append(line + self.terminator)
            if loop is None or loop.is_closed():
                self._write_pending()
            elif self._flush_on is not loop:
                self._flush_on = loop
                loop.call_soon(self.flush)

    def _write_pending(self) -> None:
        self._flush_on = None
        if self._pending:
            text = "".join(self._pending)
            self._pending.clear()
            self.stream.write(text)
        if not getattr(self.stream, "line_buffering", False):  # else the write above flushed it
            super().flush()

    def flush(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            self._write_pending()


def emit_line(logger: logging.Logger, line: str) -> None:
    """`logger.info(line)`, written straight to the gateway's own handlers when that is all
    `logging` would do with it (see `_plain_handlers`)."""
    handlers = _plain_handlers(logger)
    if handlers is None:
        logger.info(line)
        return
    for handler in handlers:
        _write(handler, line, logger)


def _plain_handlers(logger: logging.Logger) -> list[logging.StreamHandler[Any]] | None:
    """The handlers an INFO record of `logger` reaches, when writing the bare line to each is
    exactly what `logging` would do: no filters, and only StreamHandlers formatting
    `%(message)s` (the gateway's own set-up). Then a line costs a write, not a LogRecord (its
    thread, process and task lookups, the caller's frame, two locks, a formatter: ~14 us of a
    small request's ~300). None when anything else is configured: the line goes through `logging`."""
    found: list[logging.StreamHandler[Any]] = []
    current: logging.Logger | None = logger
    while current is not None:
        if current.filters or current.disabled:
            return None
        for handler in current.handlers:
            if handler.level > logging.INFO:
                continue
            if type(handler) not in (logging.StreamHandler, LoopBatchedHandler) or handler.filters:
                return None
            fmt = handler.formatter
            if fmt is not None and not (
                type(fmt) is logging.Formatter
                and fmt._fmt == "%(message)s"
                and type(fmt._style) is logging.PercentStyle
            ):
                return None
            found.append(handler)  # type: ignore[arg-type]  # a StreamHandler: its type() was checked above
        current = current.parent if current.propagate else None
    return found  # none at all: logging's last resort takes only WARNING and up, so nothing


def _write(handler: logging.StreamHandler[Any], line: str, logger: logging.Logger) -> None:
    """What the handler's emit does with a record whose formatted text is `line`."""
    if isinstance(handler, LoopBatchedHandler):
        try:
            handler.write_line(line)
        except Exception:
            handler.handleError(_record(logger, line))
        return
    try:
        handler.acquire()
        try:
            handler.stream.write(line + handler.terminator)
            handler.flush()
        finally:
            handler.release()
    except RecursionError:
        raise
    except Exception:
        handler.handleError(_record(logger, line))


def _record(logger: logging.Logger, line: str) -> logging.LogRecord:
    """The record `logger.info(line)` would have made, for a handler's error report."""
    return logger.makeRecord(logger.name, logging.INFO, __file__, 0, line, (), None)
