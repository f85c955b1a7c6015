"""Function logs (START/END/REPORT and guest lines), metrics and W3C trace context, end to end."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from typing import Any

import httpx
import pytest

from gateway.functions.logs import FunctionLogs, LogLine, ReportFigures, billed_ms, mask
from gateway.tracing import parse_traceparent
from tests.invocations.conftest import EDGEFN, TOKEN, ControlledOrigin
from tests.servers import ServerThread

CONFIG = """
[origins.web]
endpoints = [{{ url = "{origin}" }}]

[functions.hello]
component = "{{hello}}"
memory_mb = 64

[functions.fetch]
component = "{{fetch}}"
outbound = ["web"]

[functions.stream]
component = "{{stream}}"
reserved_concurrency = 1

[[routes]]
name = "hello"
path = "/hello/{{*rest}}"
function = "hello"

[[routes]]
name = "fetch"
path = "/f/{{*rest}}"
function = "fetch"
rewrite = {{ path = "/{{rest}}" }}

[[routes]]
name = "stream"
path = "/stream"
function = "stream"

[[routes]]
name = "web"
path = "/web/{{*rest}}"
origin = "web"
rewrite = {{ path = "/{{rest}}" }}
"""

AUTH = {"authorization": f"Bearer {TOKEN}"}
PARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def metrics(node: Any) -> str:
    return httpx.get(f"{node.admin}/metrics", headers=AUTH, timeout=10).text


def test_logs_show_start_guest_lines_end_report(node_factory, controlled_origin: ControlledOrigin) -> None:
    node = node_factory(CONFIG.format(origin=controlled_origin.url))
    r = httpx.get(f"{node.url}/hello/x", timeout=30)
    assert r.status_code == 200
    request_id = r.headers["x-request-id"]
    lines = node.admin_get(f"/functions/hello/logs?request_id={request_id}")["lines"]
    text = [(line["stream"], line["message"]) for line in lines]
    assert text[0] == ("platform", f"START RequestId: {request_id} Version: $LATEST")
    assert ("stdout", "hello handled GET /hello/x") in text
    assert ("stderr", "a line on stderr") in text
    assert text[-2] == ("platform", f"END RequestId: {request_id}")
    assert text[-1][0] == "platform"
    report = text[-1][1]
    fields = dict(part.split(": ", 1) for part in report.split("\t"))
    assert fields["REPORT RequestId"] == request_id
    duration = float(fields["Duration"].removesuffix(" ms"))
    # Duration is printed to 0.01 ms and billing rounds the unrounded figure up: 22.004 ms shows as
    # "22.00 ms" and bills 23 ms
    billed = int(fields["Billed Duration"].removesuffix(" ms"))
    assert billed in (billed_ms(duration - 0.005), billed_ms(duration + 0.005))
    assert fields["Memory Size"] == "64 MB"
    assert 4 <= int(fields["Max Memory Used"].removesuffix(" MB")) <= 64  # the guest's linear memory
    assert float(fields["Init Duration"].removesuffix(" ms")) > 0  # a fresh instance each time
    # the CLI prints the same lines; the gateway log has them as JSON
    out = node.cli("logs", "hello")
    assert out.returncode == 0, out.stderr
    assert f"START RequestId: {request_id} Version: $LATEST" in out.stdout
    assert "hello handled GET /hello/x" in out.stdout
    logged = [json.loads(x) for x in node.log().splitlines() if x.startswith('{"ts"') and '"function"' in x]
    assert any(d["request_id"] == request_id and d["stream"] == "stdout" for d in logged)


def test_logs_follow_streams_new_lines(node_factory, controlled_origin: ControlledOrigin) -> None:
    node = node_factory(CONFIG.format(origin=controlled_origin.url))
    follower = subprocess.Popen(
        [*EDGEFN, "logs", "hello", "--follow", "--admin", node.admin],
        env=node.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    seen: list[str] = []

    def read() -> None:
        assert follower.stdout is not None
        for line in follower.stdout:
            seen.append(line.rstrip("\n"))
            if line.startswith("REPORT"):
                return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        time.sleep(1.0)  # the follower has connected (it printed nothing: the ring was empty)
        r = httpx.get(f"{node.url}/hello/followed", timeout=30)
        request_id = r.headers["x-request-id"]
        reader.join(timeout=15)
        assert not reader.is_alive(), seen
        assert seen[0] == f"START RequestId: {request_id} Version: $LATEST"
        assert any(line.endswith("hello handled GET /hello/followed") for line in seen)
        assert seen[-1].startswith(f"REPORT RequestId: {request_id}")
    finally:
        follower.kill()
        follower.wait()


def test_metrics_by_function_and_version(node_factory, controlled_origin: ControlledOrigin) -> None:
    node = node_factory(CONFIG.format(origin=controlled_origin.url))
    for _ in range(3):
        assert httpx.get(f"{node.url}/hello/m", timeout=30).status_code == 200
    # reserved_concurrency = 1: a second request while a stream runs is throttled
    with httpx.stream("GET", f"{node.url}/stream?n=3&ms=400", timeout=30) as slow:
        assert slow.status_code == 200
        during = metrics(node)
        second = httpx.get(f"{node.url}/stream?n=1&ms=0", timeout=30)
        slow.read()
    assert second.status_code == 429 and "retry-after" in second.headers
    assert 'edgefn_function_concurrent_executions{function="stream",version="$LATEST"} 1.0' in during
    after = metrics(node)
    assert 'edgefn_function_invocations_total{function="hello",version="$LATEST"} 3.0' in after
    assert 'edgefn_function_duration_seconds_count{function="hello",version="$LATEST"} 3.0' in after
    # hello's componentize-py heap is 12.5 MiB: above 8 MiB, within 16 MiB
    assert (
        'edgefn_function_memory_used_bytes_bucket{function="hello",le="8.388608e+06",version="$LATEST"} 0.0'
        in after
    )
    assert (
        'edgefn_function_memory_used_bytes_bucket{function="hello",le="1.6777216e+07",version="$LATEST"} 3.0'
        in after
    )
    assert 'edgefn_function_throttles_total{function="stream",version="$LATEST"} 1.0' in after
    assert 'edgefn_function_errors_total{function="hello",version="$LATEST"}' not in after
    assert 'edgefn_function_concurrent_executions{function="stream",version="$LATEST"} 0.0' in after


def test_traceparent_reaches_origins_functions_and_outbound_calls(
    node_factory, controlled_origin: ControlledOrigin
) -> None:
    node = node_factory(CONFIG.format(origin=controlled_origin.url))
    incoming = parse_traceparent(PARENT)
    assert incoming is not None
    # proxied: same trace, the gateway's span as parent, flags and tracestate kept
    httpx.get(f"{node.url}/web/p1", headers={"traceparent": PARENT, "tracestate": "k=v"}, timeout=10)
    hit = controlled_origin.hits[-1]
    seen = parse_traceparent(hit.headers["traceparent"])
    assert seen is not None and seen.trace_id == incoming.trace_id and seen.parent_id != incoming.parent_id
    assert seen.flags == "01" and hit.headers["tracestate"] == "k=v"
    # none sent: one is started
    httpx.get(f"{node.url}/web/p2", headers={"traceparent": "garbage"}, timeout=10)
    fresh = parse_traceparent(controlled_origin.hits[-1].headers["traceparent"])
    assert fresh is not None and fresh.trace_id != incoming.trace_id
    # a function receives it as a request header
    doc = httpx.get(f"{node.url}/hello/t", headers={"traceparent": PARENT}, timeout=30).json()
    [value] = [v for k, v in doc["headers"] if k == "traceparent"]
    assert parse_traceparent(value).trace_id == incoming.trace_id  # type: ignore[union-attr]
    # and a function's own outbound call carries it, though the guest did not copy it
    httpx.get(f"{node.url}/f/out", headers={"traceparent": PARENT}, timeout=30)
    out = controlled_origin.hits[-1]
    assert out.path == "/out" and out.headers["x-from-function"] == "fetch"
    assert parse_traceparent(out.headers["traceparent"]).trace_id == incoming.trace_id  # type: ignore[union-attr]


class OtlpReceiver:
    """A loopback OTLP/HTTP endpoint: keeps each exported protobuf body."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        if scope["path"] == "/v1/traces":
            self.bodies.append(body)
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/x-protobuf")],
            }
        )
        await send({"type": "http.response.body", "body": b""})


def test_spans_are_exported_over_otlp_when_configured(
    node_factory, controlled_origin: ControlledOrigin
) -> None:
    trace_pb2 = pytest.importorskip(
        "opentelemetry.proto.collector.trace.v1.trace_service_pb2",
        reason="opentelemetry-proto is not installed: OTLP export cannot be checked",
    )
    receiver = OtlpReceiver()
    with ServerThread(receiver) as collector:
        node = node_factory(
            CONFIG.format(origin=controlled_origin.url),
            env={"OTEL_EXPORTER_OTLP_ENDPOINT": collector.url, "OTEL_BSP_SCHEDULE_DELAY": "100"},
        )
        httpx.get(f"{node.url}/web/traced", headers={"traceparent": PARENT}, timeout=10)
        deadline = time.monotonic() + 15
        spans = []
        while not spans:
            assert time.monotonic() < deadline, "no span reached the collector"
            time.sleep(0.1)
            for body in list(receiver.bodies):
                request = trace_pb2.ExportTraceServiceRequest()
                request.ParseFromString(body)
                spans += [
                    span
                    for rs in request.resource_spans
                    for ss in rs.scope_spans
                    for span in ss.spans
                    if span.trace_id.hex() == PARENT.split("-")[1]
                ]
    [span] = spans
    assert span.parent_span_id.hex() == PARENT.split("-")[2]
    # the span the origin saw as parent is the exported one
    sent = parse_traceparent(controlled_origin.hits[-1].headers["traceparent"])
    assert sent is not None and span.span_id.hex() == sent.parent_id
    attributes = {a.key: a.value for a in span.attributes}
    assert attributes["http.response.status_code"].int_value == 200
    assert attributes["edgefn.route"].string_value == "web"


def test_log_ring_is_bounded_and_masks_secrets() -> None:
    logs = FunctionLogs(ring_lines=5)
    for i in range(12):
        logs.guest("f", "$LATEST", f"r{i}", "stdout", f"line {i} password=hunter22", secrets=("hunter22",))
    kept = logs.lines("f")
    assert [line.request_id for line in kept] == ["r7", "r8", "r9", "r10", "r11"]
    assert all("hunter22" not in line.message and "****" in line.message for line in kept)
    assert logs.lines("f", 2)[0].request_id == "r10"
    assert mask("a b", ("a",)) == "a b"  # too short to mask without destroying the line
    assert isinstance(kept[0], LogLine)


@pytest.mark.parametrize(("duration", "billed"), [(0.0, 1), (0.2, 1), (1.0, 1), (1.0001, 2), (12.3, 13)])
def test_billed_duration_rounds_up_to_the_millisecond(duration: float, billed: int) -> None:
    assert billed_ms(duration) == billed
    text = ReportFigures(duration, 128, max_memory_bytes=3 * (1 << 20) + 1, init_ms=None).text("r")
    assert f"Billed Duration: {billed} ms" in text and "Max Memory Used: 4 MB" in text
    assert "Init Duration" not in text


# CONFIG's hello and fetch, each serving up to 10 requests on one instance
REUSED = CONFIG.replace("memory_mb = 64\n", "memory_mb = 64\ninstance_reuse = 10\n").replace(
    'outbound = ["web"]\n', 'outbound = ["web"]\ninstance_reuse = 10\n'
)


def test_reused_instances_log_each_request_once_on_the_loop_or_moved(
    node_factory, controlled_origin: ControlledOrigin
) -> None:
    """The second request to each function runs on the event loop's thread (wasm_runtime's
    `_run_inline`); fetch's moves at its outbound request and runs again on a guest thread. Each
    request still has one START, END and REPORT, its guest's lines once, and fetch reaches the
    origin once a request."""
    node = node_factory(REUSED.format(origin=controlled_origin.url))

    def figure(name: str) -> float:
        return float(next(ln.split()[1] for ln in metrics(node).splitlines() if ln.startswith(name + " ")))

    for name, path, guest_line in (
        ("hello", "/hello/again", ("stdout", "hello handled GET /hello/again")),
        ("fetch", "/f/again", None),
    ):
        for _ in range(3):
            r = httpx.get(f"{node.url}{path}", timeout=30)
            assert r.status_code == 200, r.text
            request_id = r.headers["x-request-id"]
            lines = node.admin_get(f"/functions/{name}/logs?request_id={request_id}")["lines"]
            text = [(line["stream"], line["message"]) for line in lines]
            platform = [m.split(" ", 1)[0] for s, m in text if s == "platform"]
            assert platform == ["START", "END", "REPORT"], text
            if guest_line is not None:
                assert text.count(guest_line) == 1, text
        if name == "hello":  # the first instantiated, on a guest thread
            assert figure("edgefn_wasm_ran_inline_total") == 2
    assert controlled_origin.paths("/again") == ["/again"] * 3
    # fetch's second request moved, and the next went to a thread as its pool then does
    assert figure("edgefn_wasm_moved_to_thread_total") == 1
    assert figure("edgefn_wasm_ran_inline_total") == 2


@pytest.mark.parametrize("slots", [0, 1])
def test_instance_slots_are_the_configs_and_their_figures_are_scraped(
    node_factory, controlled_origin: ControlledOrigin, slots: int
) -> None:
    """`[node] instance_slots` reaches the runtime: with one slot, fresh instances are made in
    it and at most one holds it at a time; with none, no instance is."""
    node = node_factory(f"instance_slots = {slots}\n" + CONFIG.format(origin=controlled_origin.url))
    for _ in range(3):
        r = httpx.get(f"{node.url}/hello/slots", timeout=30)
        assert r.status_code == 200, r.text
    text = metrics(node)

    def figure(name: str) -> float:
        return float(next(ln.split()[1] for ln in text.splitlines() if ln.startswith(name + " ")))

    made, in_use = figure("edgefn_wasm_made_in_slots_total"), figure("edgefn_wasm_instance_slots_in_use")
    if slots:
        assert made >= 1 and 0 <= in_use <= 1
    else:
        assert made == 0 and in_use == 0
