"""What the cheaper per-request work (issue #6) must keep: every access-log field in one JSON line,
request ids unique across processes, W3C-valid random trace ids."""

from __future__ import annotations

import io
import json
import logging
import multiprocessing
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from gateway.client import ClientConnection
from gateway.context import RequestContext
from gateway.functions.logs import LogLine
from gateway.observability import _plain_handlers, access_log, log_access
from gateway.request_ids import new_request_id
from gateway.tracing import Tracer, new_span_id, new_trace_id, parse_traceparent

from .test_proxy import config
from .test_start_imports import run_python

FIELDS = [
    "ts", "request_id", "client", "method", "host", "path", "route", "target",
    "status", "bytes_in", "bytes_out", "duration_ms", "error",
]  # fmt: skip
TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-01$")


@pytest.fixture
def plain_log(plain_handler: logging.StreamHandler[io.StringIO]) -> io.StringIO:
    return plain_handler.stream


def _only(handler: logging.Handler) -> None:
    """pytest adds its capture handlers to loggers for a test's call phase (after fixtures ran):
    a test of the gateway's own set-up removes them in its body."""
    access_log.handlers = [handler]


@dataclass
class _Route:
    name: str


@pytest.fixture
def plain_handler() -> Iterator[logging.StreamHandler[io.StringIO]]:
    """The gateway's own logging set-up (a StreamHandler writing `%(message)s`) on the access log."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(message)s"))
    level, propagate, handlers = access_log.level, access_log.propagate, access_log.handlers
    access_log.handlers = [handler]  # pytest's capture handlers would send the line through logging
    access_log.setLevel(logging.INFO)
    access_log.propagate = False
    try:
        yield handler
    finally:
        access_log.handlers = handlers
        access_log.setLevel(level)
        access_log.propagate = propagate


def _reference(
    ctx: RequestContext, line: dict[str, object], method: str, host: str, path: str, client: str
) -> str:
    """The line as json.dumps wrote it before the template (ts and duration taken from `line`)."""
    return json.dumps(
        {
            "ts": line["ts"],
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
            "duration_ms": line["duration_ms"],
            "error": ctx.error_code,
        },
        separators=(",", ":"),
    )


@pytest.mark.parametrize(
    ("route", "error", "path", "host"),
    [
        ("web", None, "/a?b=1", "example.com"),
        (None, "no_route", '/q"uote\\back\nslash', "h\u00e9t\u00e9.example:8080"),
        ("r\u2603", "bad_gateway", "/\x00\x1f\x7f/\U0001f600", ""),
    ],
)
def test_access_line_is_what_json_dumps_wrote(
    plain_log: io.StringIO, route: str | None, error: str | None, path: str, host: str
) -> None:
    ctx = RequestContext(request_id="abc", target="origin:web@http://o", status=502, bytes_out=123)
    ctx.connection = ClientConnection(receive=None, has_body=True)
    ctx.connection.bytes_in = 7
    ctx.route = _Route(route) if route else None  # type: ignore[assignment]
    ctx.error_code = error
    _only(access_log.handlers[0])  # the fixture's plain handler: the direct write
    log_access(ctx, "GET", host, path, "203.0.113.9")
    text = plain_log.getvalue()
    assert text.count("\n") == 1 and text.endswith("\n")
    line = json.loads(text)
    assert list(line) == FIELDS
    assert text[:-1] == _reference(ctx, line, "GET", host, path, "203.0.113.9")
    assert text.isascii()


def test_other_logging_setups_get_the_same_line_through_logging(caplog: pytest.LogCaptureFixture) -> None:
    ctx = RequestContext(request_id="r1", status=200)
    with caplog.at_level(logging.INFO, logger="edgefn.access"):
        log_access(ctx, "POST", "h", "/p", "c")
    (record,) = [r for r in caplog.records if r.name == "edgefn.access"]
    line = json.loads(record.getMessage())
    assert list(line) == FIELDS and line["method"] == "POST" and line["route"] is None


def test_a_filter_or_formatter_of_its_own_is_honoured(
    plain_handler: logging.StreamHandler[io.StringIO],
) -> None:
    handler = plain_handler
    plain_log = handler.stream
    handler.setFormatter(logging.Formatter("access %(levelname)s %(message)s"))
    log_access(RequestContext(request_id="r2", status=204), "GET", "h", "/", "c")
    assert plain_log.getvalue().startswith('access INFO {"ts":')
    plain_log.truncate(0)
    plain_log.seek(0)
    handler.addFilter(lambda record: False)
    log_access(RequestContext(request_id="r3", status=204), "GET", "h", "/", "c")
    assert plain_log.getvalue() == ""


def test_access_line_of_a_proxied_request(
    origin: str, gateway, plain_handler: logging.StreamHandler[io.StringIO]
) -> None:
    _only(plain_handler)
    plain_log = plain_handler.stream
    url = gateway(config(origin))
    r = httpx.get(f"{url}/web/echo/x?y=1")
    assert r.status_code == 200
    # The line is written just after the last byte goes out, on the server's thread.
    deadline = time.monotonic() + 10
    while not plain_log.getvalue() and time.monotonic() < deadline:
        time.sleep(0.01)
    (text,) = plain_log.getvalue().splitlines()
    line = json.loads(text)
    assert list(line) == FIELDS
    assert line["request_id"] == r.headers["x-request-id"]
    assert line["path"] == "/echo/x?y=1" and line["route"] == "web" and line["status"] == 200
    assert line["bytes_out"] == len(r.content) and line["client"] == "127.0.0.1" and line["error"] is None
    assert line["target"].startswith("origin:web") and line["duration_ms"] >= 0


def _ids_of_a_child(out: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    out.put(([new_request_id() for _ in range(2000)], [new_trace_id() for _ in range(300)]))


def test_request_and_trace_ids_stay_unique_across_forked_workers() -> None:
    """Workers fork from one parent that has already made ids: each must draw its own."""
    parent_ids = [new_request_id() for _ in range(2000)]
    parent_traces = [new_trace_id() for _ in range(300)]
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    children = [ctx.Process(target=_ids_of_a_child, args=(out,)) for _ in range(3)]
    for child in children:
        child.start()
    results = [out.get(timeout=60) for _ in children]
    for child in children:
        child.join(60)
    ids = parent_ids + [i for r in results for i in r[0]]
    traces = parent_traces + [t for r in results for t in r[1]]
    assert len(set(ids)) == len(ids) == 8000
    assert len(set(traces)) == len(traces) == 1200
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids)
    prefixes = {i[:16] for i in ids}
    assert len(prefixes) == 4  # one random prefix per process


def test_new_trace_and_span_ids_are_valid_random_and_unique() -> None:
    traces = [new_trace_id() for _ in range(5000)]  # 5000 * 24 bytes: many refills of the pool
    spans = [new_span_id() for _ in range(5000)]
    assert len(set(traces)) == 5000 and len(set(spans)) == 5000
    assert all(re.fullmatch(r"[0-9a-f]{32}", t) and t != "0" * 32 for t in traces)
    assert all(re.fullmatch(r"[0-9a-f]{16}", s) and s != "0" * 16 for s in spans)
    # random, not a counter: every hex digit shows up about equally in every position
    last = [t[-1] for t in traces]
    assert len(set(last)) == 16
    assert max(last.count(d) for d in set(last)) < 5000 / 16 * 1.6


def test_a_new_trace_starts_with_a_valid_traceparent() -> None:
    tracer = Tracer({})
    headers = [(b"traceparent", b"00-" + b"0" * 32 + b"-" + b"1" * 16 + b"-01")]  # invalid: all-zero id
    span = tracer.accept("GET", "h", "/", headers)
    ((name, value),) = headers
    m = TRACEPARENT.match(value.decode())
    assert name == b"traceparent" and m is not None
    assert m.group(1) == span.trace_id != "0" * 32
    assert parse_traceparent(value) is not None
    # a valid incoming one keeps its trace id and gets a new span id
    incoming = f"00-{'ab' * 16}-{'cd' * 8}-01".encode()
    headers = [(b"traceparent", incoming)]
    child = tracer.accept("GET", "h", "/", headers)
    assert child.trace_id == "ab" * 16 and child.span_id != "cd" * 8
    assert TRACEPARENT.match(headers[0][1].decode())


def test_the_gateways_own_logging_setup_takes_the_direct_write(
    plain_handler: logging.StreamHandler[io.StringIO],
) -> None:
    _only(plain_handler)
    assert _plain_handlers(access_log) == [plain_handler]
    access_log.propagate = True  # the root logger's handlers count too
    root = logging.getLogger()
    other = logging.FileHandler("/dev/null")
    root.addHandler(other)
    try:
        assert _plain_handlers(access_log) is None
    finally:
        root.removeHandler(other)
        other.close()


@pytest.mark.parametrize(
    ("headers", "announced"),
    [([], False), ([(b"content-length", b"0")], False), ([(b"content-length", b"3")], True),
     ([(b"transfer-encoding", b"chunked")], True)],
)
def test_a_function_is_handed_a_request_body_only_when_one_is_announced(
    headers: list[tuple[bytes, bytes]], announced: bool
) -> None:
    """No body stream for a bodiless request: the guest's read then ends at once, where a stream
    costs its thread a trip to the event loop for the empty end (0.1-0.2 ms of a hello)."""
    from gateway.context import EdgeRequest, single_chunk
    from gateway.functions.target import guest_request

    body = single_chunk(b"abc")
    request = EdgeRequest("POST", "http", "example.test", "/", b"", headers, body, "192.0.2.1")
    assert request.has_body is announced
    assert guest_request(request, b"1.1 edgefn").body is (body if announced else None)


class _CountingStream(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, s: str) -> int:
        self.writes += 1
        return super().write(s)


def test_log_lines_of_one_loop_pass_leave_in_one_write_and_in_order() -> None:
    """The gateway's handler: a request's lines written on the loop go out together at the end of
    the loop's pass; a line from another thread goes at once, after what was pending."""
    import asyncio
    import threading

    from gateway.observability import LoopBatchedHandler

    stream = _CountingStream()
    handler = LoopBatchedHandler(stream)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger("edgefn.test-batched")
    logger.handlers, logger.propagate = [handler], False
    logger.setLevel(logging.INFO)

    async def main() -> tuple[str, int, str, int]:
        for i in range(4):
            logger.info("line %d", i)
        during = (stream.getvalue(), stream.writes)
        await asyncio.sleep(0)  # the pass ends: the queued flush runs
        await asyncio.sleep(0)
        after = (stream.getvalue(), stream.writes)
        return during + after

    during_text, during_writes, after_text, after_writes = asyncio.run(main())
    assert (during_text, during_writes) == ("", 0)
    assert after_text == "line 0\nline 1\nline 2\nline 3\n" and after_writes == 1

    async def pending_then_thread() -> None:
        logger.info("on the loop")
        thread = threading.Thread(target=logger.info, args=("from a thread",))
        thread.start()
        thread.join()

    asyncio.run(pending_then_thread())
    assert stream.getvalue().endswith("on the loop\nfrom a thread\n")

    async def flushed_before_the_pass_ends() -> str:
        logger.info("at exit")
        handler.flush()  # what logging.shutdown does at exit, whatever the loop does next
        return stream.getvalue()

    assert asyncio.run(flushed_before_the_pass_ends()).endswith("at exit\n")


@pytest.mark.parametrize("buffering", [1, -1], ids=["line-buffered", "block-buffered"])
def test_a_loop_pass_lines_reach_the_file_at_its_end(tmp_path: Path, buffering: int) -> None:
    """A line-buffered stream (stderr always is) is not flushed again after its write; either
    kind of stream has the pass's lines in the file once the pass ends."""
    import asyncio

    from gateway.observability import LoopBatchedHandler

    path = tmp_path / "log"
    with path.open("w", buffering=buffering) as stream:
        handler = LoopBatchedHandler(stream)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger = logging.getLogger(f"edgefn.test-file-{buffering}")
        logger.handlers, logger.propagate = [handler], False
        logger.setLevel(logging.INFO)

        async def main() -> str:
            logger.info("one")
            logger.info("two")
            await asyncio.sleep(0)
            await asyncio.sleep(0)
            return path.read_text()

        assert asyncio.run(main()) == "one\ntwo\n"


def test_function_metric_children_are_looked_up_once_and_made_only_when_used() -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from gateway.functions.metrics import FunctionMetrics

    metrics = FunctionMetrics(CollectorRegistry())
    child = metrics.child(metrics.invocations, "f", "1")
    assert metrics.child(metrics.invocations, "f", "1") is child
    assert metrics.child(metrics.invocations, "f", "2") is not child
    assert metrics.child(metrics.errors, "f", "1") is not child  # same labels, another metric
    text = generate_latest(metrics.registry).decode()
    assert 'edgefn_function_invocations_total{function="f",version="1"} 0.0' in text
    assert "edgefn_function_throttles_total{" not in text  # never touched: absent, as with labels()


def test_a_function_log_line_is_what_json_dumps_wrote() -> None:
    for message in ["plain", 'quote " and \\ back', "tab\tnew\nline\x00\x1f", "é ü 日本 🙂", ""]:
        line = LogLine(time.time(), "fn-ü", "$LATEST", "abc123", "stdout", message)
        assert line.as_json() == json.dumps(line.as_dict(), separators=(",", ":"))
        assert json.loads(line.as_json()) == line.as_dict()


NO_CYCLES_CONFIG = """
[node]
data_dir = "{data_dir}"

[functions.hello]
component = "{hello}"
instance_reuse = 1000

[[routes]]
name = "hello"
path = "/hello"
function = "hello"

[[routes]]
name = "away"
path = "/away"
redirect = {{ to = "/", status = 308 }}
"""
# Run in a process of its own: in the suite's, what earlier tests left behind (a runtime shut down in
# a cycle, let go by one of their threads) turned into garbage during these requests.
NO_CYCLES_SCRIPT = """
import gc, json, sys
from pathlib import Path
import httpx
from gateway.app import Gateway
from routes import load_config
from tests.servers import ServerThread

OURS = {"gateway", "routes", "edge", "wasm_runtime"}
paths = ["/hello", "/away", "/nowhere"]
with ServerThread(Gateway(load_config(Path(sys.argv[1])))) as server, httpx.Client(base_url=server.url) as client:
    for p in paths:  # warm: the instance, the route table's caches, the log rings
        client.get(p)
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    statuses = [client.get(p).status_code for p in paths for _ in range(20)]
    gc.collect()
    ours = sorted({type(o).__qualname__ for o in gc.garbage if type(o).__module__.split(".")[0] in OURS})
    gc.set_debug(0)
    gc.garbage.clear()
    gc.enable()
print(json.dumps({"statuses": statuses, "garbage": ours}))
"""


def test_a_served_request_leaves_no_reference_cycle(
    tmp_path: Path, example_components: dict[str, Path]
) -> None:
    """A request's objects are freed when it ends, not found later by the collector: the request
    context and its client connection referred to each other, which left three objects a request
    for the collector and made it run more often (each collection walks every request in flight)."""
    from tests.gateway.conftest import shared_data_dir

    path = tmp_path / "edgefn.toml"
    path.write_text(
        NO_CYCLES_CONFIG.format(data_dir=shared_data_dir(tmp_path / "data"), hello=example_components["hello"])
    )
    found = json.loads(run_python(NO_CYCLES_SCRIPT, str(path)).splitlines()[-1])
    assert found["statuses"] == [200] * 20 + [308] * 20 + [404] * 20
    assert found["garbage"] == []
