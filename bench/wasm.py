"""`python -m bench.wasm`: edgefn's wasm functions against `wasmtime serve` and workerd, in one run.

The same components (examples/hello/hello.wasm, examples/stream/stream.wasm, built by `make
examples`) run in edgefn (`edgefn serve --workers 1` and `2`) and in the native `wasmtime serve`;
workerd runs their JavaScript twins (bench/workers/). Everything listens on loopback and is
started and stopped here. Workloads, in this order:

1. restart to first response: a one-function edgefn started with an empty compile cache (cold),
   then N times with the cache warm; `wasmtime serve` on the `.wasm` (compiled at start) and on a
   precompiled `.cwasm`; workerd. The clock runs from spawning the process to the first 200.
2. hello at 1 and 64 connections (wrk): edgefn with a fresh instance per request and with
   `instance_reuse = 1000`; `wasmtime serve` fresh (its default) and with
   `--max-instance-reuse-count 1000`, each also with edgefn's default time limit (`-W timeout=`,
   on a build with epoch checks: the `timed` rows); workerd. Targets alternate within each pass;
   medians of the passes. The RSS of each system is sampled during the 64-connection runs.
3. a guest streaming 20 MB (20 chunks of 1 MiB, each flushed): MiB/s and time to the first body
   byte; and the time to the first body byte of a 16-byte stream. Both from an asyncio client in
   its own process (bench/wasm_client.py), which also checks every byte.
4. 1,000 slow streams held open at once from the stream function (a 16-byte chunk a second),
   RSS and PSS of the serving process tree sampled meanwhile; a system whose PSS (the memory it
   uses: RSS counts each instance's copy-on-write mapping of the same compiled image again) grows
   past `--pss-cap-mb` has its clients cut off, so one runaway peer cannot take the shared machine
   down.

Results replace the `bench.wasm` section of docs/performance.md.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import resource
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import wasm_peers, wasm_report
from bench.harness import (
    MIB,
    BenchError,
    Child,
    Processes,
    WrkResult,
    free_port,
    machine_info,
    median,
    run_bench,
    run_wrk,
    say,
    write_section,
)
from bench.proxy import edgefn_argv, group_cpu_s
from gateway.server import raise_open_files_limit

ROOT = Path(__file__).resolve().parent.parent
SECTION = "bench.wasm"
EXAMPLES = {name: ROOT / "examples" / name / f"{name}.wasm" for name in ("hello", "stream")}
REUSE = 1000
STREAM_BYTES = 20 * MIB
STREAM_PATH = "/stream?n=20&ms=0&size=1048576"
SMALL_PATH = "/stream?n=1&ms=0&size=16"
HELD_PATH = "/stream?n=600&ms=1000&size=16"
FLOOR_PATH = "/floor"


@dataclass
class Options:
    passes: int = 2
    duration_s: float = 5.0
    edgefn_workers: tuple[int, ...] = (1, 2)
    stream_runs: int = 3
    ttfb_runs: int = 20
    restarts: int = 5
    held: int = 1000
    hold_s: float = 10.0
    pss_cap_mb: int = 4096
    log_level: str = "INFO"
    edgefn_command: str = ""
    peers: tuple[str, ...] = ("wasmtime", "workerd")


@dataclass
class System:
    """One running server; `urls` maps a role (hello, hello-reuse, stream) to its base URL."""

    name: str
    kind: str  # edgefn | wasmtime | workerd
    child: Child
    argv: list[str]
    urls: dict[str, str]
    start_s: float = 0.0


@dataclass(frozen=True)
class Target:
    label: str
    system: System
    role: str

    @property
    def url(self) -> str:
        return self.system.urls[self.role]


@dataclass
class HelloSample:
    wrk: WrkResult
    cpu_pct: float
    rss_peak_mb: float
    pss_peak_mb: float


@dataclass
class StreamSamples:
    mib_s: list[float] = field(default_factory=list)
    ttfb_20mb_ms: list[float] = field(default_factory=list)
    ttfb_small_ms: list[float] = field(default_factory=list)


@dataclass
class Restart:
    label: str
    command: str
    cold_s: float = float("nan")
    warm_s: list[float] = field(default_factory=list)
    load_ms: list[float] = field(default_factory=list)  # edgefn: component load, from its log
    compile_s: float = float("nan")  # edgefn: compile, from its log
    worker: bool = False  # a killed worker's replacement, not a whole process's start


@dataclass
class Held:
    label: str
    client: dict[str, object]
    rss_before_mb: float
    rss_peak_mb: float
    pss_peak_mb: float
    note: str = ""


@dataclass
class Results:
    restarts: list[Restart] = field(default_factory=list)
    hello: dict[tuple[str, str], list[HelloSample]] = field(default_factory=lambda: defaultdict(list))
    stream: dict[str, StreamSamples] = field(default_factory=lambda: defaultdict(StreamSamples))
    idle: dict[str, tuple[float, float]] = field(default_factory=dict)
    held: list[Held] = field(default_factory=list)
    versions: dict[str, str] = field(default_factory=dict)
    peer_notes: list[str] = field(default_factory=list)
    load_during: list[str] = field(default_factory=list)
    inproc: list[dict[str, float]] = field(default_factory=list)


# --- memory of a process tree --------------------------------------------------------------------


def group_memory_mb(pgid: int) -> tuple[float, float]:
    """(RSS, PSS) in MiB summed over every process of a process group (edgefn's workers included).
    RSS counts pages shared between the processes once per process; PSS splits them."""
    rss = pss = 0
    for pid in _group_pids(pgid):
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Rss:"):
                    rss += int(line.split()[1])
                elif line.startswith("Pss:"):
                    pss += int(line.split()[1])
        except (OSError, ValueError):
            continue  # the process ended between the listing and the read
    return rss / 1024, pss / 1024


def _group_pids(pgid: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:
            pids.append(int(entry.name))
    return pids


class MemorySampler:
    """Samples a group's RSS and PSS every `period_s` on a thread while the `with` block runs."""

    def __init__(self, pgid: int, period_s: float = 0.25) -> None:
        self.pgid = pgid
        self.period_s = period_s
        self.peak_rss = 0.0
        self.peak_pss = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while True:
            rss, pss = group_memory_mb(self.pgid)
            self.peak_rss = max(self.peak_rss, rss)
            self.peak_pss = max(self.peak_pss, pss)
            if self._stop.wait(self.period_s):
                return

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


# --- starting systems --------------------------------------------------------------------------


def first_200(url: str, child: Child, started: float, timeout_s: float, read_body: bool = True) -> float:
    """Seconds from `started` (just before the spawn) to the first 200 from `url`, polled every
    2 ms: a 100 ms poll would hide the figure the target is about. `read_body=False` for a URL
    whose body never ends: its status line is the answer."""
    parts = url.split("/", 3)
    host, port = parts[2].rsplit(":", 1)
    path = "/" + (parts[3] if len(parts) > 3 else "")
    last = ""
    while time.monotonic() - started < timeout_s:
        if child.proc.poll() is not None:
            raise BenchError(f"{child.name} exited with {child.proc.returncode}:\n{child.tail()}")
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            if read_body:
                resp.read()
            if resp.status == 200:
                return time.monotonic() - started
            last = f"status {resp.status}"
        except OSError as exc:
            last = str(exc)
        finally:
            conn.close()
        time.sleep(0.002)
    raise BenchError(f"{child.name} did not answer {url} within {timeout_s:.0f} s ({last}):\n{child.tail()}")


def spawn(
    procs: Processes,
    name: str,
    argv: list[str],
    url: str,
    env: dict[str, str] | None = None,
    read_body: bool = True,
) -> tuple[Child, float]:
    started = time.monotonic()
    child = procs.start(name, argv, env=env)
    return child, first_200(url, child, started, timeout_s=180, read_body=read_body)


def edgefn_toml(name: str, port: int, admin: int, data_dir: Path, functions: Sequence[str]) -> str:
    """The bench's edgefn config: `hello` (fresh instance per request), `hello-reuse` (the same
    file with instance_reuse and provisioned instances), `stream`; each on a route of its own name."""
    out = [
        "[node]",
        f'name = "{name}"',
        f'listen = "127.0.0.1:{port}"',
        f'admin_listen = "127.0.0.1:{admin}"',
        f'data_dir = "{data_dir}"',
        "",
    ]
    specs = {
        "hello": f'component = "{EXAMPLES["hello"]}"',
        "hello-reuse": f'component = "{EXAMPLES["hello"]}"\ninstance_reuse = {REUSE}\n'
        f"provisioned = {wasm_report.PROVISIONED}",
        "stream": f'component = "{EXAMPLES["stream"]}"\ntimeout_s = 900',
    }
    for fn in functions:
        out += [f"[functions.{fn}]", specs[fn], ""]
    for fn in functions:
        out += ["[[routes]]", f'name = "{fn}"', f'path = "/{fn}"', f'function = "{fn}"', ""]
    # The gateway alone (no function, no origin): the floor under every function's latency.
    out += [
        "[[routes]]",
        'name = "floor"',
        f'path = "{FLOOR_PATH}"',
        'redirect = { to = "/", status = 308 }',
        "",
    ]
    return "\n".join(out)


def edgefn_command(
    workdir: Path, name: str, functions: Sequence[str], workers: int, data_dir: Path, opts: Options
) -> tuple[list[str], dict[str, str], str]:
    port, admin = free_port(), free_port()
    conf = workdir / f"{name}.toml"
    conf.write_text(edgefn_toml(name, port, admin, data_dir, functions))
    base, env = edgefn_argv(opts.edgefn_command)
    argv = [*base, "serve", "--config", str(conf), "--workers", str(workers), "--log-level", opts.log_level]
    return argv, env, f"http://127.0.0.1:{port}"


@dataclass
class Peers:
    wasmtime: Path | None = None
    hello_cwasm: Path | None = None
    hello_cwasm_epoch: Path | None = None  # compiled with epoch checks, for `-W timeout=`
    stream_cwasm: Path | None = None
    workerd: Path | None = None


def prepare_peers(opts: Options, results: Results) -> Peers:
    """Find or install each peer; one that cannot run here is recorded with the reason."""
    cache = wasm_peers.cache_dir()
    peers = Peers()
    if "wasmtime" in opts.peers:
        try:
            peers.wasmtime = wasm_peers.wasmtime_binary(cache)
            results.versions["wasmtime serve"] = wasm_peers.wasmtime_version(peers.wasmtime)
            peers.hello_cwasm = wasm_peers.precompiled(peers.wasmtime, EXAMPLES["hello"], cache, say)
            peers.hello_cwasm_epoch = wasm_peers.precompiled(
                peers.wasmtime, EXAMPLES["hello"], cache, say, epoch=True
            )
            peers.stream_cwasm = wasm_peers.precompiled(peers.wasmtime, EXAMPLES["stream"], cache, say)
        except BenchError as exc:
            peers.wasmtime = None
            results.peer_notes.append(f"`wasmtime serve` could not run: {exc}")
    if "workerd" in opts.peers:
        try:
            peers.workerd = wasm_peers.workerd_binary(cache)
            results.versions["workerd"] = wasm_peers.workerd_version(peers.workerd, cache)
        except BenchError as exc:
            peers.workerd = None
            results.peer_notes.append(f"workerd could not run: {exc}")
    for note in results.peer_notes:
        say(f"  {note}")
    return peers


# --- 1. restarts ---------------------------------------------------------------------------------

_LOADED = re.compile(r"loaded hello sha256=\w+ from cache in ([\d.]+) ms")
_COMPILED = re.compile(r"compiled hello sha256=\w+ in ([\d.]+) s")


PACKAGES = ("gateway", "routes", "edge", "wasm_runtime")


def byte_compile(root: Path) -> None:
    """Byte-compile edgefn's packages under `root`, as `pip install` does for an installed node (the
    container image): run from a checkout with PYTHONDONTWRITEBYTECODE=1, as here, every start
    otherwise compiles each of edgefn's ~80 modules from source (100-150 ms of a restart)."""
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", *PACKAGES],
        cwd=root,
        check=True,
        capture_output=True,
        timeout=300,
    )


def measure_restarts(procs: Processes, workdir: Path, peers: Peers, opts: Options, results: Results) -> Path:
    """Returns edgefn's data dir, whose compile cache then holds hello."""
    byte_compile(ROOT)
    data = workdir / "edgefn-data"
    argv, env, base = edgefn_command(workdir, "edgefn-restart", ["hello"], 1, data, opts)
    r = Restart("edgefn, one function (hello)", _cmd(argv, workdir))
    rounds = [True] + [False] * opts.restarts
    for cold in rounds:
        child, seconds = spawn(procs, "edgefn-restart", argv, base + "/hello", env)
        procs.stop(child)
        log = child.log.read_text(errors="replace")
        if cold:
            r.cold_s = seconds
            m = _COMPILED.search(log)
            r.compile_s = float(m.group(1)) if m else float("nan")
        else:
            r.warm_s.append(seconds)
            m = _LOADED.search(log)
            if m:
                r.load_ms.append(float(m.group(1)))
        say(f"  edgefn {'cold' if cold else 'warm'}: first 200 after {seconds * 1000:.0f} ms")
    results.restarts.append(r)
    results.restarts.append(worker_restarts(procs, workdir, data, opts))
    results.restarts.append(import_time(opts))

    if peers.wasmtime is not None and peers.hello_cwasm is not None:
        port = free_port()
        cold_argv = wasm_peers.wasmtime_serve_argv(peers.wasmtime, port, EXAMPLES["hello"])
        warm_argv = wasm_peers.wasmtime_serve_argv(peers.wasmtime, port, peers.hello_cwasm)
        w = Restart("`wasmtime serve`, hello (.wasm cold, .cwasm warm)", _cmd(warm_argv, workdir))
        url = f"http://127.0.0.1:{port}/hello"
        for cold in rounds:
            child, seconds = spawn(procs, "wasmtime-restart", cold_argv if cold else warm_argv, url)
            procs.stop(child)
            if cold:
                w.cold_s = seconds
            else:
                w.warm_s.append(seconds)
            say(f"  wasmtime serve {'cold' if cold else 'warm'}: first 200 after {seconds * 1000:.0f} ms")
        results.restarts.append(w)

    if peers.workerd is not None:
        port = free_port()
        config = wasm_peers.workerd_config(workdir, {"hello": port})
        wd_argv = wasm_peers.workerd_argv(peers.workerd, config)
        k = Restart("workerd, hello.js (no compile step)", _cmd(wd_argv, workdir))
        for _ in range(opts.restarts):
            child, seconds = spawn(procs, "workerd-restart", wd_argv, f"http://127.0.0.1:{port}/hello")
            procs.stop(child)
            k.warm_s.append(seconds)
        say(f"  workerd: first 200 after {median(k.warm_s) * 1000:.0f} ms (median)")
        results.restarts.append(k)
    return data


_READY = "Application startup complete"


def worker_restarts(procs: Processes, workdir: Path, data: Path, opts: Options) -> Restart:
    """`--workers 2`, one function: a worker killed (SIGKILL) to its replacement's "Application
    startup complete" in the node's log, from which on it answers. Not to a first 200: the kernel
    hands a new connection to either worker, so one could come from the other. The node restarts
    a killed worker at most once per RESTART_EVERY_S, so the kills are spaced by more."""
    from gateway.server import RESTART_EVERY_S

    argv, env, base = edgefn_command(workdir, "edgefn-workers-restart", ["hello"], 2, data, opts)
    label = "edgefn `--workers 2`, one function (hello): a killed worker to its replacement ready"
    r = Restart(label, _cmd(argv, workdir), worker=True)
    child, _ = spawn(procs, "edgefn-workers-restart", argv, base + "/hello", env)

    def ready() -> int:
        return child.log.read_text(errors="replace").count(_READY)

    try:
        _wait_for(lambda: ready() >= 2, 120, "both workers ready", child)
        for _ in range(opts.restarts):
            time.sleep(RESTART_EVERY_S + 0.5)
            before = ready()
            killed = time.monotonic()
            os.kill(_forked_workers(child.pid)[0], signal.SIGKILL)
            _wait_for(lambda n=before: ready() > n, 60, "the killed worker replaced", child)
            r.warm_s.append(time.monotonic() - killed)
            loads = _LOADED.findall(child.log.read_text(errors="replace"))
            r.load_ms.append(float(loads[-1]))
            say(f"  edgefn worker replaced: ready {r.warm_s[-1] * 1000:.0f} ms after the kill")
    finally:
        procs.stop(child)
    return r


def _wait_for(done: Callable[[], bool], timeout_s: float, what: str, child: Child) -> None:
    deadline = time.monotonic() + timeout_s
    while not done():
        if time.monotonic() > deadline or child.proc.poll() is not None:
            raise BenchError(f"{child.name}: not {what} within {timeout_s:.0f} s:\n{child.tail()}")
        time.sleep(0.002)


def _forked_workers(node: int) -> list[int]:
    """The workers of a node process: the rest of its process group (the harness starts each
    system in a session of its own; gateway.server.worker_context forks the workers)."""
    workers = [pid for pid in _group_pids(node) if pid != node]
    if not workers:
        raise BenchError(f"no worker under process {node}")
    return workers


def import_time(opts: Options) -> Restart:
    """The interpreter and edgefn's imports alone, no config, no socket: the floor under edgefn's
    restart figure that no compile cache can remove. The process leaves with `os._exit` right
    after the imports: a server's restart figure stops at its first 200, before any teardown."""
    imports = "import gateway.cli, gateway.server, gateway.app, wasm_runtime.runtime"
    argv = [sys.executable, "-c", f"{imports}; import os; os._exit(0)"]
    r = Restart("python + edgefn's imports alone (no gateway, no function)", shlex.join(argv[1:]))
    for _ in range(opts.restarts):
        started = time.monotonic()
        subprocess.run(argv, check=True, cwd=ROOT, timeout=120)
        r.warm_s.append(time.monotonic() - started)
    say(f"  imports alone: {median(r.warm_s) * 1000:.0f} ms (median)")
    return r


def _cmd(argv: Sequence[str], workdir: Path) -> str:
    text = shlex.join(argv).replace(str(workdir), "WORKDIR").replace(str(ROOT) + "/", "")
    return text.replace(str(wasm_peers.cache_dir()), "BENCH_CACHE")


# --- 2. the long-lived systems -------------------------------------------------------------------


def start_systems(procs: Processes, workdir: Path, data: Path, peers: Peers, opts: Options) -> list[System]:
    systems: list[System] = []
    functions = ["hello", "hello-reuse", "stream"]
    # Compile `stream` into the cache first, so that every edgefn measured below starts warm (a
    # process that compiled keeps the compiler's memory, which would inflate its idle RSS).
    argv, env, base = edgefn_command(workdir, "edgefn-prime", ["stream"], 1, data, opts)
    child, _ = spawn(procs, "edgefn-prime", argv, base + SMALL_PATH, env)
    procs.stop(child)
    for workers in opts.edgefn_workers:
        name = f"edgefn-w{workers}"
        argv, env, base = edgefn_command(workdir, name, functions, workers, data, opts)
        child, seconds = spawn(procs, name, argv, base + "/hello", env)
        urls = {
            "hello": base + "/hello",
            "hello-reuse": base + "/hello-reuse",
            "stream": base,
            "floor": base + FLOOR_PATH,
        }
        systems.append(System(name, "edgefn", child, argv, urls, seconds))
    if (
        peers.wasmtime is not None
        and peers.hello_cwasm is not None
        and peers.hello_cwasm_epoch is not None
        and peers.stream_cwasm is not None
    ):
        limit = wasm_peers.FUNCTION_TIMEOUT_S
        for name, cwasm, reuse, role, timeout_s in (
            ("wasmtime-fresh", peers.hello_cwasm, 0, "hello", None),
            ("wasmtime-reuse", peers.hello_cwasm, REUSE, "hello-reuse", None),
            ("wasmtime-fresh-timed", peers.hello_cwasm_epoch, 0, "hello", limit),
            ("wasmtime-reuse-timed", peers.hello_cwasm_epoch, REUSE, "hello-reuse", limit),
            ("wasmtime-stream", peers.stream_cwasm, 0, "stream", None),
        ):
            port = free_port()
            argv = wasm_peers.wasmtime_serve_argv(
                peers.wasmtime, port, cwasm, reuse=reuse, timeout_s=timeout_s
            )
            base = f"http://127.0.0.1:{port}"
            url = base if role == "stream" else base + "/hello"
            child, seconds = spawn(procs, name, argv, base + SMALL_PATH if role == "stream" else url)
            systems.append(System(name, "wasmtime", child, argv, {role: url}, seconds))
    if peers.workerd is not None:
        hello_port, stream_port = free_port(), free_port()
        config = wasm_peers.workerd_config(workdir, {"hello": hello_port, "stream": stream_port})
        argv = wasm_peers.workerd_argv(peers.workerd, config)
        hello = f"http://127.0.0.1:{hello_port}"
        child, seconds = spawn(procs, "workerd", argv, hello + "/hello")
        urls = {"hello": hello + "/hello", "stream": f"http://127.0.0.1:{stream_port}"}
        systems.append(System("workerd", "workerd", child, argv, urls, seconds))
    for s in systems:
        say(f"  {s.name}: first 200 after {s.start_s * 1000:.0f} ms")
    return systems


def hello_targets(systems: Sequence[System]) -> list[Target]:
    out = []
    for s in systems:
        if s.kind == "edgefn":
            out += [Target(f"{s.name} fresh", s, "hello"), Target(f"{s.name} reuse", s, "hello-reuse")]
            if s.name == "edgefn-w1":
                out.append(Target("edgefn-w1 no function", s, "floor"))
        elif s.kind == "wasmtime" and ("hello" in s.urls or "hello-reuse" in s.urls):
            role = "hello" if "hello" in s.urls else "hello-reuse"
            out.append(Target(s.name.replace("-", " "), s, role))  # "wasmtime fresh timed"
        elif s.kind == "workerd":
            out.append(Target("workerd", s, "hello"))
    return out


def stream_targets(systems: Sequence[System]) -> list[Target]:
    return [
        Target(s.name if s.kind == "edgefn" else s.kind, s, "stream") for s in systems if "stream" in s.urls
    ]


def measure_idle(systems: Sequence[System], results: Results) -> None:
    time.sleep(1.0)
    for s in systems:
        results.idle[s.name] = group_memory_mb(s.child.pid)


# --- 3. hello ----------------------------------------------------------------------------------


def measure_hello(target: Target, connections: int, duration_s: float, workdir: Path) -> HelloSample:
    pgid = target.system.child.pid
    cpu = group_cpu_s(pgid)
    with MemorySampler(pgid) as mem:
        wrk = run_wrk(target.url, connections=connections, duration_s=duration_s, workdir=workdir)
    cpu_pct = 100 * (group_cpu_s(pgid) - cpu) / wrk.duration_s if wrk.duration_s else float("nan")
    return HelloSample(wrk, cpu_pct, mem.peak_rss, mem.peak_pss)


def run_hello(targets: Sequence[Target], opts: Options, workdir: Path, data: Path, results: Results) -> None:
    say("hello: 1 s warm-up of each target")
    for t in targets:
        measure_hello(t, 64, 1.0, workdir)
    for n in range(1, opts.passes + 1):
        for conns in (1, 64):
            for t in targets:
                if t.role == "floor" and conns != 1:
                    continue
                s = measure_hello(t, conns, opts.duration_s, workdir)
                results.hello[(f"c{conns}", t.label)].append(s)
                w = s.wrk
                say(
                    f"pass {n}/{opts.passes} hello-c{conns:<2} {t.label:<16} {w.req_per_s:>8,.0f} req/s "
                    f"p50 {w.p50_ms:8.2f} ms p99 {w.p99_ms:8.2f} ms cpu {s.cpu_pct:4.0f}% "
                    f"rss {s.rss_peak_mb:6.0f} MiB errors {w.errors}"
                )
        inproc = client_json(
            [sys.executable, "-m", "bench.wasm_inproc", str(data), "--runs", "100"], timeout_s=300
        )
        results.inproc.append(inproc)
        say(f"pass {n}/{opts.passes} Runtime.invoke alone: {inproc}")
        results.load_during.append(_loadavg())


# --- 4. streams --------------------------------------------------------------------------------


def client(args: list[str], timeout_s: float) -> dict[str, Any]:
    return client_json([sys.executable, "-m", "bench.wasm_client", *args], timeout_s)


def client_json(argv: list[str], timeout_s: float) -> dict[str, Any]:
    """Run a measuring child (its own process: it must not share a GIL with anything measured)
    and read the one JSON object it prints."""
    what = shlex.join(argv[1:])
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, cwd=ROOT)
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"{what} did not finish within {timeout_s:.0f} s") from exc
    try:
        result = json.loads(out.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError) as exc:
        raise BenchError(f"{what} failed ({out.returncode}): {out.stderr.strip()[-500:]}") from exc
    if "error" in result:
        raise BenchError(f"{what}: {result['error']}")
    return result


def fetch(url: str, runs: int, expect_bytes: int) -> list[dict[str, float]]:
    """`runs` sequential downloads of `url` by the client process, each body checked."""
    args = ["fetch", url, "--runs", str(runs), "--expect-bytes", str(expect_bytes)]
    result = client(args, timeout_s=60 + 60 * runs)
    return list(result["runs"])


def run_streams(targets: Sequence[Target], opts: Options, results: Results) -> None:
    for n in range(1, opts.passes + 1):
        for t in targets:
            big = fetch(t.system.urls["stream"] + STREAM_PATH, opts.stream_runs, STREAM_BYTES)
            small = fetch(t.system.urls["stream"] + SMALL_PATH, opts.ttfb_runs, 16)
            s = results.stream[t.label]
            mib_s = [r["body_bytes"] / MIB / r["total_s"] for r in big]
            s.mib_s += mib_s
            s.ttfb_20mb_ms += [r["ttfb_ms"] for r in big]
            s.ttfb_small_ms += [r["ttfb_ms"] for r in small]
            say(
                f"pass {n}/{opts.passes} stream {t.label:<12} {median(mib_s):8.1f} MiB/s "
                f"ttfb 20 MB {median([r['ttfb_ms'] for r in big]):7.2f} ms "
                f"ttfb 16 B {median([r['ttfb_ms'] for r in small]):7.2f} ms"
            )


# --- 5. held streams ---------------------------------------------------------------------------


def run_held(procs: Processes, targets: Sequence[Target], opts: Options, results: Results) -> None:
    """One system at a time; each is stopped right after, so that the work it may still do for
    the abandoned requests does not load the next measurement."""
    for t in targets:
        pgid = t.system.child.pid
        before, _ = group_memory_mb(pgid)
        log_offset = t.system.child.log.stat().st_size
        argv = [
            sys.executable,
            "-m",
            "bench.wasm_client",
            "hold",
            t.system.urls["stream"] + HELD_PATH,
            "--connections",
            str(opts.held),
            "--hold-s",
            f"{opts.hold_s:g}",
        ]
        note = ""
        with MemorySampler(pgid, period_s=0.2) as mem:
            proc = subprocess.Popen(
                argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT, start_new_session=True
            )
            deadline = time.monotonic() + opts.hold_s + 120
            while proc.poll() is None:
                if mem.peak_pss > opts.pss_cap_mb:
                    note = f"cut off: PSS passed the {opts.pss_cap_mb} MiB cap"
                    proc.kill()
                    break
                if time.monotonic() > deadline:
                    note = "cut off: the client did not finish"
                    proc.kill()
                    break
                time.sleep(0.1)
            out, err = proc.communicate(timeout=30)
        try:
            result = json.loads(out.decode().strip().splitlines()[-1]) if not note else {}
        except (IndexError, json.JSONDecodeError):
            note = f"client failed: {err.decode(errors='replace').strip()[-300:]}"
            result = {}
        procs.stop(t.system.child)
        server_errors = log_errors(t.system.child.log, log_offset)
        if server_errors:
            note = "; ".join(filter(None, [note, f"server log: {server_errors}"]))
        held = Held(t.label, result, before, mem.peak_rss, mem.peak_pss, note)
        results.held.append(held)
        say(
            f"held {opts.held} streams on {t.label}: answered {result.get('answered', '-')} "
            f"with body {result.get('with_body', '-')} errors {result.get('error_count', '-')} "
            f"rss {before:.0f} -> {mem.peak_rss:.0f} MiB {note}"
        )


def log_errors(log: Path, offset: int) -> str:
    """The most frequent `error: ...` line a server logged after `offset`, with its count: why a
    peer refused streams, in its own words."""
    with log.open("rb") as f:
        f.seek(offset)
        text = f.read().decode(errors="replace")
    counts = Counter(
        line.strip()[:200] for line in text.splitlines() if line.lstrip().lower().startswith("error:")
    )
    return "; ".join(f"{n} x `{line}`" for line, n in counts.most_common(2))


# --- report --------------------------------------------------------------------------------------


def _loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


# --- main ----------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.wasm", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--passes", type=int, default=2, help="passes over hello and streams (default 2)")
    p.add_argument("--duration", type=float, default=5.0, help="seconds per wrk run (default 5)")
    p.add_argument("--workers", default="1,2", help="edgefn worker counts, comma-separated (default 1,2)")
    p.add_argument("--stream-runs", type=int, default=3, help="20 MB downloads per target and pass")
    p.add_argument("--ttfb-runs", type=int, default=20, help="16-byte streams per target and pass")
    p.add_argument("--restarts", type=int, default=5, help="warm restarts per system (default 5)")
    p.add_argument("--held", type=int, default=1000, help="slow streams held at once (default 1000)")
    p.add_argument("--hold-s", type=float, default=10.0, help="seconds the held streams stay open")
    p.add_argument("--pss-cap-mb", type=int, default=4096, help="cut off held streams above this PSS")
    p.add_argument("--peers", default="wasmtime,workerd", help="peers to run (wasmtime, workerd; '' = none)")
    p.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="edgefn's --log-level (default INFO: function and access logs on)",
    )
    p.add_argument("--edgefn-command", default="", help="command run in place of the venv's `edgefn`")
    p.add_argument("--output", type=Path, default=ROOT / "docs" / "performance.md")
    p.add_argument("--keep-workdir", action="store_true")
    args = p.parse_args(argv)
    if args.passes < 1 or args.duration <= 0 or args.held < 1 or args.restarts < 1:
        p.error("--passes, --held and --restarts must be >= 1 and --duration > 0")
    unknown = {x for x in args.peers.split(",") if x} - {"wasmtime", "workerd"}
    if unknown:
        p.error(f"unknown peers: {', '.join(sorted(unknown))}")
    return args


def raise_nofile(want: int) -> None:
    """Children inherit the limit: edgefn and the peers each hold `--held` sockets at once. Raised
    as `edgefn serve` raises its own (to the hard limit), so the peers get as many."""
    raise_open_files_limit()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < want:
        raise BenchError(f"RLIMIT_NOFILE hard limit {hard} is below the {want} the held streams need")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    opts = Options(
        passes=args.passes,
        duration_s=args.duration,
        edgefn_workers=tuple(int(x) for x in args.workers.split(",") if x),
        stream_runs=args.stream_runs,
        ttfb_runs=args.ttfb_runs,
        restarts=args.restarts,
        held=args.held,
        hold_s=args.hold_s,
        pss_cap_mb=args.pss_cap_mb,
        log_level=args.log_level,
        edgefn_command=args.edgefn_command,
        peers=tuple(x for x in args.peers.split(",") if x),
    )
    command = "python -m bench.wasm " + shlex.join(argv if argv is not None else sys.argv[1:])
    started = time.monotonic()

    def work(workdir: Path) -> None:
        missing = [str(p.relative_to(ROOT)) for p in EXAMPLES.values() if not p.exists()]
        if missing:
            raise BenchError(f"missing {', '.join(missing)}: run `make examples` first")
        raise_nofile(opts.held * 2 + 1024)
        machine = machine_info()
        results = Results()
        say("peers")
        peers = prepare_peers(opts, results)
        with Processes(workdir) as procs:
            say("restart to first response")
            data = measure_restarts(procs, workdir, peers, opts, results)
            say("starting systems")
            systems = start_systems(procs, workdir, data, peers, opts)
            measure_idle(systems, results)
            run_hello(hello_targets(systems), opts, workdir, data, results)
            run_streams(stream_targets(systems), opts, results)
            run_held(procs, stream_targets(systems), opts, results)
        machine["load average at end"] = _loadavg()
        body = wasm_report.render(
            systems, results, opts, machine, command.strip(), lambda argv: _cmd(argv, workdir)
        )
        write_section(args.output, SECTION, body)
        say(f"wrote {args.output} in {time.monotonic() - started:.0f} s")

    return run_bench("edgefn-bench-wasm-", work, keep_workdir=args.keep_workdir)


if __name__ == "__main__":
    sys.exit(main())
