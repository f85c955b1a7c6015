"""The untimed parts of bench/wasm*.py: the streaming client's framing and byte checks against a
real loopback server, the configs it generates for edgefn and workerd, and its reading of logs.

Figures are the benchmark's business (docs/performance.md); these tests only pin down that what it
measures is what it says: a wrong byte or a non-200 fails a run instead of being timed.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bench import wasm, wasm_client, wasm_peers
from routes import load_config
from tests.servers import ServerThread

ROOT = Path(__file__).resolve().parents[2]

Scope = dict[str, Any]
Send = Callable[[dict[str, Any]], Any]


def stream_app(body: bytes, *, status: int = 200, chunk: int = 4096, sized: bool = False) -> Any:
    """An ASGI app answering every GET with `body`, chunked (several sends) or with a length."""

    async def app(scope: Scope, receive: Callable[[], Any], send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                msg = await receive()
                if msg["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        headers = [(b"content-length", str(len(body)).encode())] if sized else []
        await send({"type": "http.response.start", "status": status, "headers": headers})
        for i in range(0, len(body), chunk):
            await send({"type": "http.response.body", "body": body[i : i + chunk], "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    return app


def pattern(n: int) -> bytes:
    return (bytes(range(256)) * (n // 256 + 1))[:n]


@pytest.mark.parametrize("sized", [False, True])
def test_fetch_reads_the_whole_body_and_times_the_first_body_byte(sized: bool) -> None:
    body = pattern(300_000)
    with ServerThread(stream_app(body, sized=sized)) as srv:
        result = asyncio.run(wasm_client.fetch_many(srv.url + "/stream", 2, True, len(body)))
    runs = result["runs"]
    assert isinstance(runs, list) and len(runs) == 2
    for r in runs:
        assert r["body_bytes"] == len(body)
        assert 0 < r["ttfb_ms"] <= r["total_s"] * 1000


def test_fetch_fails_on_a_wrong_byte() -> None:
    body = bytearray(pattern(100_000))
    body[77_777] ^= 0xFF
    with ServerThread(stream_app(bytes(body))) as srv, pytest.raises(wasm_client.ClientError, match="at byte 77777"):
        asyncio.run(wasm_client.fetch_many(srv.url + "/", 1, True, None))


def test_fetch_fails_on_a_short_body_and_on_an_error_status() -> None:
    short = pytest.raises(wasm_client.ClientError, match="1000 body bytes, expected 2000")
    with ServerThread(stream_app(pattern(1000))) as srv, short:
        asyncio.run(wasm_client.fetch_many(srv.url + "/", 1, True, 2000))
    with ServerThread(stream_app(b"no", status=503)) as srv, pytest.raises(wasm_client.ClientError, match="503"):
        asyncio.run(wasm_client.fetch_many(srv.url + "/", 1, True, None))


def test_client_cli_prints_json_and_a_clear_error() -> None:
    argv = [sys.executable, "-m", "bench.wasm_client", "fetch", "https://example.com/"]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 1
    assert "only http://" in json.loads(out.stdout)["error"]


def test_hold_keeps_every_connection_open_until_the_end() -> None:
    async def slow(scope: Scope, receive: Callable[[], Any], send: Send) -> None:
        if scope["type"] == "lifespan":
            return await stream_app(b"")(scope, receive, send)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": pattern(16), "more_body": True})
        await asyncio.sleep(60)  # the client closes first

    with ServerThread(slow) as srv:
        result = asyncio.run(wasm_client.hold(srv.url + "/", 20, 0.5))
    assert result["opened"] == 20
    assert result["answered"] == 20
    assert result["with_body"] == 20
    assert result["error_count"] == 0


def test_edgefn_config_is_valid_and_names_each_function(
    tmp_path: Path, example_components: dict[str, Path]
) -> None:
    """The config names the built example files (the fixture builds them in a fresh clone)."""
    text = wasm.edgefn_toml("b", 18000, 18001, tmp_path / "data", ["hello", "hello-reuse", "stream"])
    path = tmp_path / "edgefn.toml"
    path.write_text(text)
    config = load_config(path)
    assert set(config.functions) == {"hello", "hello-reuse", "stream"}
    assert config.functions["hello"].instance_reuse == 0
    assert config.functions["hello-reuse"].instance_reuse == wasm.REUSE
    assert Path(config.functions["hello"].component) == wasm.EXAMPLES["hello"]
    assert Path(config.functions["hello-reuse"].component) == wasm.EXAMPLES["hello"]
    by_path = {r.path: r for r in config.routes}
    assert sorted(by_path) == ["/floor", "/hello", "/hello-reuse", "/stream"]
    assert by_path["/hello-reuse"].function == "hello-reuse"
    assert by_path[wasm.FLOOR_PATH].function is None and by_path[wasm.FLOOR_PATH].origin is None


def test_workerd_config_serves_each_worker_on_its_port(tmp_path: Path) -> None:
    path = wasm_peers.workerd_config(tmp_path, {"hello": 4001, "stream": 4002})
    text = path.read_text()
    assert 'address = "127.0.0.1:4001", http = (), service = "hello"' in text
    assert 'address = "127.0.0.1:4002", http = (), service = "stream"' in text
    assert (tmp_path / "hello.js").read_text() == (wasm_peers.WORKERS_DIR / "hello.js").read_text()
    assert (tmp_path / "stream.js").exists()
    with pytest.raises(wasm.BenchError, match="no JavaScript worker"):
        wasm_peers.workerd_config(tmp_path, {"nope": 4003})


def test_wasmtime_argv_precompiled_and_reuse(tmp_path: Path) -> None:
    binary = tmp_path / "wasmtime"
    fresh = wasm_peers.wasmtime_serve_argv(binary, 9, tmp_path / "hello.wasm")
    assert "--allow-precompiled" not in fresh and "--max-instance-reuse-count" not in fresh
    assert fresh[fresh.index("-C") + 1] == "cache=n"
    reuse = wasm_peers.wasmtime_serve_argv(binary, 9, tmp_path / "hello.cwasm", reuse=1000)
    assert "--allow-precompiled" in reuse
    assert reuse[reuse.index("--max-instance-reuse-count") + 1] == "1000"
    assert reuse[-1].endswith("hello.cwasm")


def test_a_timed_wasmtime_serve_gets_edgefns_default_limit_and_an_epoch_build(tmp_path: Path) -> None:
    """The `timed` peer runs with the limit a function gets when it names none, and on a .cwasm
    compiled with epoch checks (`wasmtime serve -W timeout=` refuses one compiled without them),
    cached apart from the plain build of the same file."""
    assert load_config_function_timeout(tmp_path) == wasm_peers.FUNCTION_TIMEOUT_S
    timed = wasm_peers.wasmtime_serve_argv(tmp_path / "wasmtime", 9, tmp_path / "h.cwasm", timeout_s=10.0)
    assert timed[timed.index("-W") + 1] == "timeout=10s"
    assert "-W" not in wasm_peers.wasmtime_serve_argv(tmp_path / "wasmtime", 9, tmp_path / "h.cwasm")

    binary = tmp_path / "wasmtime"  # writes the arguments it was given as the "compiled" output
    binary.write_text(
        '#!/bin/sh\n[ "$1" = --version ] && { echo "wasmtime 49.0.4"; exit 0; }\n'
        'args="$*"; while [ "$1" != -o ]; do shift; done; echo "$args" > "$2"\n'
    )
    binary.chmod(0o755)
    wasm_file = tmp_path / "hello.wasm"
    wasm_file.write_bytes(b"\0asm")
    plain = wasm_peers.precompiled(binary, wasm_file, tmp_path / "cache")
    epoch = wasm_peers.precompiled(binary, wasm_file, tmp_path / "cache", epoch=True)
    assert plain != epoch
    assert "epoch-interruption=y" in epoch.read_text() and "epoch" not in plain.read_text()


def load_config_function_timeout(tmp_path: Path) -> float:
    """`timeout_s` of a function whose config names none."""
    (tmp_path / "f.wasm").write_bytes(b"")
    config = tmp_path / "edgefn.toml"
    config.write_text('[functions.f]\ncomponent = "f.wasm"\n')
    return load_config(config).functions["f"].timeout_s


def test_log_errors_counts_only_lines_after_the_offset(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    log.write_text("error: before the hold\n")
    offset = log.stat().st_size
    with log.open("a") as f:
        f.write("error: limit reached\nstdout [1] :: fine\nerror: limit reached\nerror: other\n")
    assert wasm.log_errors(log, offset) == "2 x `error: limit reached`; 1 x `error: other`"
    assert wasm.log_errors(log, log.stat().st_size) == ""


def test_group_memory_counts_this_process_group() -> None:
    rss, pss = wasm.group_memory_mb(os.getpgid(0))
    assert rss > 1 and 0 < pss <= rss


def test_bad_arguments_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        wasm.parse_args(["--peers", "wasmtime,nginx"])
    assert "unknown peers: nginx" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        wasm.parse_args(["--held", "0"])


def test_hello_table_gives_cpu_a_request_from_each_pass() -> None:
    """CPU ms a request is each pass's CPU over its requests, then the median: 150 % of a core at
    1,500 req/s is 1 ms; a pass that answered nothing is left out rather than dividing by zero."""
    from bench import wasm_report
    from bench.harness import WrkResult

    def sample(requests: int, cpu_pct: float) -> wasm.HelloSample:
        return wasm.HelloSample(WrkResult(requests, 0, 1.0, 0.5, 2.0, 0), cpu_pct, 100.0, 80.0)

    results = wasm.Results()
    results.hello[("c1", "edgefn-w1 reuse")] += [sample(1000, 90.0), sample(800, 80.0), sample(0, 5.0)]
    results.hello[("c64", "edgefn-w1 reuse")] += [sample(1500, 150.0), sample(1000, 150.0)]
    lines = "\n".join(wasm_report._hello(results, wasm.Options())).splitlines()
    header = next(line for line in lines if line.startswith("| target"))
    row = next(line for line in lines if line.startswith("| `edgefn-w1 reuse`"))
    cells = dict(zip([c.strip() for c in header.split("|")], [c.strip() for c in row.split("|")], strict=True))
    assert cells["c1 CPU ms/req"] == "0.950"  # median of 0.900 and 1.000
    assert cells["c64 CPU ms/req"] == "1.250"  # median of 1.000 and 1.500


def test_edgefn_is_set_against_wasmtime_serve_with_and_without_its_time_limit() -> None:
    """Targets are judged against `wasmtime serve` as the issue names it; the timed peer is given
    beside it, in the ratios, the verdict and what the limit costs."""
    from bench import wasm_report
    from bench.harness import WrkResult

    def sample(req_per_s: float) -> wasm.HelloSample:
        return wasm.HelloSample(WrkResult(int(req_per_s * 5), 0, 5.0, 0.5, 2.0, 0), 100.0, 100.0, 80.0)

    results = wasm.Results()
    for conns in ("c1", "c64"):
        results.hello[(conns, "edgefn-w1 reuse")].append(sample(1200.0))
        results.hello[(conns, "wasmtime reuse")].append(sample(3000.0))
        results.hello[(conns, "wasmtime reuse timed")].append(sample(2000.0))
    text = "\n".join(wasm_report._hello(results, wasm.Options()))
    assert "| `edgefn-w1 reuse` | `wasmtime reuse` | 0.40 | 0.40 |" in text
    assert "| `edgefn-w1 reuse` | `wasmtime reuse timed` | 0.60 | 0.60 |" in text
    verdict = next(v for v in wasm_report.verdicts(results, wasm.Options()) if v.startswith("- hello c1"))
    assert "= 0.40x (target >= 0.5x): **MISSES**" in verdict
    assert "(against `wasmtime reuse timed`, the same time limit: 0.60x)" in verdict
    (limit,) = wasm_report._time_limit(results)
    assert "2,000 against 3,000 req/s reuse (0.67x)" in limit
    results.hello.pop(("c1", "wasmtime reuse timed"))
    assert wasm_report._time_limit(results) == []
