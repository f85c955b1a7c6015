"""The proxy benchmark: edgefn against nginx as a reverse proxy, in front of the same nginx origin.

The origin is nginx serving static files, so the proxy in between is what the figures measure;
the origin alone is measured too, as the ceiling. Every system is started once, then each
workload runs against each system in turn (A B C A B C ...), pass after pass, so that drift of
the machine during the run lands on every system alike. Medians of the passes are reported.
"""

from __future__ import annotations

import os
import resource
import shlex
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench.harness import (
    MIB,
    BenchError,
    Child,
    Processes,
    WrkResult,
    fmt,
    free_port,
    machine_busy_s,
    median,
    ratio,
    run_wrk,
    table,
    tool_path,
    wait_http,
    wrk_argv,
)

BIG = "/big.bin"
TINY = "/tiny.txt"
TINY_BODY = b"hello from the origin\n"
SECTION = "bench.proxy"


@dataclass(frozen=True)
class Workload:
    name: str
    title: str
    path: str
    connections: int


WORKLOADS = (
    Workload("big-c16", "Proxied 1 MiB GET, 16 connections", BIG, 16),
    Workload("big-c64", "Proxied 1 MiB GET, 64 connections", BIG, 64),
    Workload("tiny-c64", "Tiny response, 64 connections", TINY, 64),
    Workload("latency-c1", "Added latency, one connection (tiny response)", TINY, 1),
)


@dataclass
class System:
    name: str
    title: str
    kind: str  # "origin" | "nginx" | "edgefn"
    base_url: str
    child: Child
    config_file: Path
    start_s: float = 0.0


@dataclass
class Options:
    passes: int = 2
    duration_s: float = 10.0
    edgefn_workers: tuple[int, ...] = (1, 2)
    nginx_workers: int = 1
    profile: bool = True
    profile_s: float = 10.0
    edgefn_log_level: str = "INFO"
    edgefn_command: str = ""  # replaces `edgefn` (A/B runs of a changed gateway); empty: the venv's
    workloads: tuple[str, ...] = tuple(w.name for w in WORKLOADS)


@dataclass
class Sample:
    """One wrk run and the CPU seconds each party used meanwhile.

    `others_s` is the machine's busy time minus the system's, the origin's and wrk's: load from
    processes outside the benchmark, which makes the run noisy when it is not near zero.
    """

    wrk: WrkResult
    cpu_s: float  # the system under test, its whole process group
    origin_cpu_s: float  # the origin, when it is not itself the system under test
    wrk_cpu_s: float
    others_s: float

    def share(self, seconds: float) -> float:
        """CPU seconds as a percentage of one core over the run."""
        return 100 * seconds / self.wrk.duration_s if self.wrk.duration_s else float("nan")


@dataclass
class Results:
    samples: dict[tuple[str, str], list[Sample]] = field(default_factory=lambda: defaultdict(list))
    profile: Profile | None = None
    profile_note: str = ""
    wrk_commands: list[str] = field(default_factory=list)


# --- configs -----------------------------------------------------------------------------------


def _nginx_common(workdir: Path, name: str, workers: int) -> str:
    tmp = workdir / f"{name}-tmp"
    tmp.mkdir(exist_ok=True)
    # Workers run as `nobody` when the master is root: they must write their temp files here.
    tmp.chmod(0o777)
    temps = "\n".join(
        f"  {kind}_temp_path {tmp}/{kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return f"""worker_processes {workers};
daemon off;
master_process on;
pid {workdir}/{name}.pid;
error_log {workdir}/{name}-error.log warn;
events {{ worker_connections 4096; }}
http {{
{temps}
  default_type application/octet-stream;
  sendfile on;
  tcp_nopush on;
  tcp_nodelay on;
  keepalive_timeout 60s;
  keepalive_requests 100000;
"""


def origin_conf(workdir: Path, port: int, www: Path, workers: int) -> str:
    return (
        _nginx_common(workdir, "origin", workers)
        + f"""  access_log off;
  server {{
    listen 127.0.0.1:{port};
    root {www};
    location = /healthz {{ return 200 "ok\\n"; }}
  }}
}}
"""
    )


def nginx_proxy_conf(
    workdir: Path,
    name: str,
    port: int,
    origin_port: int,
    workers: int,
    buffering: bool,
    big_buffers: bool = False,
) -> str:
    return (
        _nginx_common(workdir, name, workers)
        + f"""  access_log {workdir}/{name}-access.log;
  upstream origin {{
    server 127.0.0.1:{origin_port};
    keepalive 64;
    keepalive_requests 100000;
  }}
  server {{
    listen 127.0.0.1:{port};
    location / {{
      proxy_pass http://origin;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering {"on" if buffering else "off"};{BIG_BUFFERS if big_buffers else ""}
    }}
  }}
}}
"""
    )


# nginx's default proxy buffers are 4-8 KiB, so it moves a 1 MiB body in small reads; with
# buffers the size of edgefn's socket reads (256 KiB) it is much faster, and the fair peer.
BIG_BUFFERS = (
    "\n      proxy_buffers 8 256k;\n      proxy_buffer_size 256k;\n      proxy_busy_buffers_size 512k;"
)
NGINX_PROXIES = (("nginx", False, False), ("nginx-buffered", True, False), ("nginx-bigbuf", True, True))


def edgefn_toml(workdir: Path, name: str, port: int, admin_port: int, origin_port: int) -> str:
    return f"""[node]
name = "{name}"
listen = "127.0.0.1:{port}"
admin_listen = "127.0.0.1:{admin_port}"
data_dir = "{workdir / (name + "-data")}"

[origins.web]
endpoints = [{{ url = "http://127.0.0.1:{origin_port}" }}]

[[routes]]
name = "all"
path = "/{{*rest}}"
origin = "web"
"""


# --- starting the systems ----------------------------------------------------------------------


ROOT = Path(__file__).resolve().parent.parent


def edgefn_argv(command: str = "") -> tuple[list[str], dict[str, str]]:
    """How to run `edgefn`: `command` if given, else the venv's script once `pip install -e .` made
    it, else the module from this checkout (the script is only a wrapper around `gateway.cli:main`)."""
    script = Path(sys.executable).parent / "edgefn"
    env = dict(os.environ)
    if command:
        return shlex.split(command), env
    if script.exists():
        return [str(script)], env
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    return [sys.executable, "-m", "gateway.cli"], env


def write_www(workdir: Path) -> Path:
    www = workdir / "www"
    www.mkdir(exist_ok=True)
    (www / BIG.lstrip("/")).write_bytes(os.urandom(MIB))
    (www / TINY.lstrip("/")).write_bytes(TINY_BODY)
    for p in (workdir, www, *www.iterdir()):
        p.chmod(0o755 if p.is_dir() else 0o644)
    return www


def _start_nginx(procs: Processes, workdir: Path, name: str, conf: str) -> tuple[Child, Path]:
    path = workdir / f"{name}.conf"
    path.write_text(conf)
    nginx = tool_path("nginx")
    check = subprocess.run(
        [nginx, "-t", "-q", "-c", str(path), "-p", str(workdir)], capture_output=True, text=True, timeout=30
    )
    if check.returncode != 0:
        raise BenchError(f"nginx rejects {path}: {check.stderr.strip()}")
    return procs.start(name, [nginx, "-c", str(path), "-p", str(workdir)]), path


def start_systems(procs: Processes, workdir: Path, opts: Options, say: Callable[[str], None]) -> list[System]:
    www = write_www(workdir)
    systems: list[System] = []

    def started(system: System) -> System:
        system.start_s = wait_http(system.base_url + TINY, system.child, timeout_s=90)
        say(f"  {system.name}: up in {system.start_s * 1000:.0f} ms on {system.base_url}")
        systems.append(system)
        return system

    origin_port = free_port()
    child, conf = _start_nginx(
        procs, workdir, "origin", origin_conf(workdir, origin_port, www, opts.nginx_workers)
    )
    started(
        System(
            "origin", "origin alone (nginx static)", "origin", f"http://127.0.0.1:{origin_port}", child, conf
        )
    )

    for name, buffering, big in NGINX_PROXIES:
        port = free_port()
        conf_text = nginx_proxy_conf(workdir, name, port, origin_port, opts.nginx_workers, buffering, big)
        child, conf = _start_nginx(procs, workdir, name, conf_text)
        title = f"nginx proxy, proxy_buffering {'on' if buffering else 'off'}"
        title += ", 256 KiB proxy buffers" if big else ""
        started(System(name, title, "nginx", f"http://127.0.0.1:{port}", child, conf))

    for workers in opts.edgefn_workers:
        name = f"edgefn-w{workers}"
        port, admin = free_port(), free_port()
        conf = workdir / f"{name}.toml"
        conf.write_text(edgefn_toml(workdir, name, port, admin, origin_port))
        base, env = edgefn_argv(opts.edgefn_command)
        argv = [
            *base,
            "serve",
            "--config",
            str(conf),
            "--workers",
            str(workers),
            "--log-level",
            opts.edgefn_log_level,
        ]
        child = procs.start(name, argv, env=env)
        started(
            System(
                name, f"edgefn serve --workers {workers}", "edgefn", f"http://127.0.0.1:{port}", child, conf
            )
        )
    return systems


# --- measuring ---------------------------------------------------------------------------------


def group_cpu_s(pgid: int) -> float:
    """User + system CPU seconds of every live process in a process group (workers included)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        # After the command name: state(0) ppid(1) pgrp(2) ... utime(11) stime(12)
        if int(fields[2]) == pgid:
            total += int(fields[11]) + int(fields[12])
    return total / tick


def measure(system: System, origin: System, workload: Workload, workdir: Path, duration_s: float) -> Sample:
    pgids = {system.child.pid, origin.child.pid}
    before = {pgid: group_cpu_s(pgid) for pgid in pgids}
    busy = machine_busy_s()
    wrk = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = run_wrk(
        system.base_url + workload.path,
        connections=workload.connections,
        threads=1,
        duration_s=duration_s,
        workdir=workdir,
    )
    wrk_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    busy = machine_busy_s() - busy
    used = {pgid: group_cpu_s(pgid) - before[pgid] for pgid in pgids}
    wrk_s = (wrk_after.ru_utime + wrk_after.ru_stime) - (wrk.ru_utime + wrk.ru_stime)
    origin_s = used[origin.child.pid] if origin is not system else 0.0
    return Sample(
        result, used[system.child.pid], origin_s, wrk_s, max(0.0, busy - sum(used.values()) - wrk_s)
    )


def run_passes(
    systems: Sequence[System], opts: Options, workdir: Path, say: Callable[[str], None]
) -> Results:
    results = Results()
    workloads = [w for w in WORKLOADS if w.name in opts.workloads]
    for w in workloads:
        results.wrk_commands.append(
            " ".join(
                wrk_argv(
                    f"http://127.0.0.1:PORT{w.path}",
                    connections=w.connections,
                    threads=1,
                    duration_s=opts.duration_s,
                    script=Path("done.lua"),
                )
            )
        )
    origin = next(s for s in systems if s.kind == "origin")
    say("warm-up: 1 s of each workload on each system")
    for w in workloads:
        for s in systems:
            measure(s, origin, w, workdir, 1.0)
    for n in range(1, opts.passes + 1):
        for w in workloads:
            for s in systems:
                sample = measure(s, origin, w, workdir, opts.duration_s)
                results.samples[(w.name, s.name)].append(sample)
                r, pct = sample.wrk, sample.share
                say(
                    f"pass {n}/{opts.passes} {w.name:<10} {s.name:<15} {r.req_per_s:>9,.0f} req/s "
                    f"{r.mib_per_s:>8,.1f} MiB/s p50 {r.p50_ms:7.3f} ms p99 {r.p99_ms:8.3f} ms "
                    f"cpu {pct(sample.cpu_s):4.0f}% origin {pct(sample.origin_cpu_s):3.0f}% "
                    f"wrk {pct(sample.wrk_cpu_s):3.0f}% others {pct(sample.others_s):3.0f}% "
                    f"errors {r.errors}"
                )
    return results


def profile_edgefn(
    system: System, opts: Options, workdir: Path, results: Results, say: Callable[[str], None]
) -> None:
    """Sample the single-process edgefn with py-spy while it proxies 1 MiB bodies at 64 connections."""
    spy = Path(sys.executable).parent / "py-spy"
    if not spy.exists():
        results.profile_note = "py-spy is not installed in the venv (`pip install -e '.[dev]'`); no profile."
        return
    out = workdir / "edgefn-profile.txt"
    say(f"profiling {system.name} with py-spy for {opts.profile_s:g} s under the 1 MiB, 64-connection load")
    argv = [
        str(spy),
        "record",
        "--pid",
        str(system.child.pid),
        "--duration",
        f"{opts.profile_s:g}",
        "--rate",
        "200",
        "--format",
        "raw",
        "--output",
        str(out),
        "--nonblocking",
        "--function",
    ]
    spy_proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        time.sleep(0.5)
        run_wrk(system.base_url + BIG, connections=64, duration_s=opts.profile_s + 1, workdir=workdir)
        log = spy_proc.communicate(timeout=opts.profile_s + 30)[0].decode(errors="replace")
    finally:
        if spy_proc.poll() is None:
            spy_proc.kill()
            spy_proc.wait()
    if spy_proc.returncode != 0 or not out.exists():
        results.profile_note = f"py-spy failed ({spy_proc.returncode}): {log.strip()[-300:]}"
        return
    results.profile = top_frames(out.read_text())
    total = results.profile.samples
    results.profile_note = (
        f"`py-spy record --rate 200 --nonblocking --function` of `{system.name}`, {opts.profile_s:g} s, "
        f"{total} samples of non-idle threads"
    )


def _short(frame: str) -> str:
    """`func (path/to/site-packages/pkg/mod.py:12)` -> `func (pkg/mod.py:12)`."""
    func, _, loc = frame.partition(" (")
    loc = loc.rstrip(")")
    for marker in ("site-packages/", "/lib/python3.11/", "/work/main/"):
        if marker in loc:
            loc = loc.split(marker, 1)[1]
    return f"{func} ({loc})" if loc else func


PROJECT_PACKAGES = ("gateway/", "routes/", "edge/", "wasm_runtime/")


@dataclass
class Profile:
    samples: int = 0
    own: list[tuple[str, float]] = field(default_factory=list)  # leaf frames
    packages: list[tuple[str, float]] = field(default_factory=list)  # leaf frames by top-level package
    project: list[tuple[str, float]] = field(default_factory=list)  # edgefn's functions, inclusive


def _package(frame: str) -> str:
    loc = frame.partition(" (")[2].rstrip(")")
    if loc.startswith("<frozen "):
        return loc[len("<frozen ") :].split(".")[0].split(">")[0] + " (frozen)"
    return loc.split("/")[0] if "/" in loc else loc.split(":")[0]


def top_frames(raw: str, n: int = 12) -> Profile:
    """Shares of samples from py-spy's collapsed stacks (`a;b;c count`): where the CPU is spent
    (leaf frames, and leaves by package) and which of edgefn's own functions it is spent under."""
    own: Counter[str] = Counter()
    packages: Counter[str] = Counter()
    project: Counter[str] = Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        k = int(count)
        frames = [_short(f) for f in stack.split(";")]
        total += k
        own[frames[-1]] += k
        packages[_package(frames[-1])] += k
        for f in set(frames):
            if any(f"({pkg}" in f for pkg in PROJECT_PACKAGES) and "cli.py" not in f and "server.py" not in f:
                project[f] += k
    if not total:
        return Profile()

    def shares(c: Counter[str]) -> list[tuple[str, float]]:
        return [(f, k / total) for f, k in c.most_common(n)]

    return Profile(total, shares(own), shares(packages), shares(project))


# --- the report --------------------------------------------------------------------------------


def _med(samples: list[Sample], attr: str) -> float:
    return median([getattr(s.wrk, attr) for s in samples])


def _cpu(samples: list[Sample], attr: str = "cpu_s") -> float:
    return median([s.share(getattr(s, attr)) for s in samples])


def render(
    systems: Sequence[System],
    results: Results,
    opts: Options,
    machine: dict[str, str],
    command: str,
    workdir: Path,
) -> str:
    out: list[str] = ["## Proxy: edgefn against nginx, in front of the same origin", ""]
    out += ["### Machine", "", table(["", ""], [[k, v] for k, v in machine.items()]), ""]
    out += _commands_section(systems, results, opts, command, workdir)
    workloads = [w for w in WORKLOADS if w.name in opts.workloads]
    for w in workloads:
        out += _workload_table(w, systems, results)
    out += _ratios_section(systems, results, workloads)
    out += _reading(systems, results, workloads)
    return "\n".join(out) + "\n"


def _commands_section(
    systems: Sequence[System], results: Results, opts: Options, command: str, workdir: Path
) -> list[str]:
    out = [
        "### Commands",
        "",
        "```sh",
        command,
        "```",
        "",
        f"{opts.passes} passes of {opts.duration_s:g} s per workload and system, systems in turn within a "
        "pass (after a 1 s warm-up of each); medians of the passes below. The load generator "
        "(wrk, one thread), the origin and the proxy share the machine's cores. Systems, as started:",
        "",
    ]
    for s in systems:
        shown = " ".join(_display(str(a), workdir) for a in s.child.proc.args)  # type: ignore[union-attr]
        out.append(f"- `{s.name}` ({s.title}): `{shown}`, first 200 after {s.start_s * 1000:.0f} ms")
    out += [
        "",
        "wrk, per workload (`done.lua` prints exact percentiles and byte counts as JSON):",
        "",
        "```sh",
        *results.wrk_commands,
        "```",
        "",
    ]
    edgefn = next((s for s in systems if s.kind == "edgefn"), None)
    nginx = next((s for s in systems if s.kind == "nginx"), None)
    if edgefn is not None:
        out += [
            "<details><summary>edgefn config (ports vary per run)</summary>",
            "",
            "```toml",
            edgefn.config_file.read_text().replace(str(workdir), "WORKDIR").strip(),
            "```",
            "</details>",
            "",
        ]
    if nginx is not None:
        out += [
            "<details><summary>nginx proxy config (ports vary per run)</summary>",
            "",
            "```nginx",
            nginx.config_file.read_text().replace(str(workdir), "WORKDIR").strip(),
            "```",
            "</details>",
            "",
            "`nginx-buffered` differs in `proxy_buffering on`; `nginx-bigbuf` also sets "
            + "; ".join(f"`{line.strip()}`" for line in BIG_BUFFERS.strip().splitlines())
            + ": nginx's default 4-8 KiB buffers move a 1 MiB body in small reads.",
            "",
        ]
    return out


def _display(arg: str, workdir: Path) -> str:
    """An argument as a reader would type it: venv paths relative to the checkout, temp dir as WORKDIR."""
    if arg.startswith(str(ROOT) + "/"):
        return arg[len(str(ROOT)) + 1 :]
    if arg == sys.executable:
        return ".venv/bin/python"
    return arg.replace(str(workdir), "WORKDIR")


def _workload_table(w: Workload, systems: Sequence[System], results: Results) -> list[str]:
    rows = []
    for s in systems:
        samples = results.samples.get((w.name, s.name), [])
        if not samples:
            continue
        passes = ", ".join(fmt(x.wrk.mib_per_s if w.path == BIG else x.wrk.req_per_s) for x in samples)
        rows.append(
            [
                f"`{s.name}`",
                fmt(_med(samples, "req_per_s")),
                fmt(_med(samples, "mib_per_s"), 1),
                fmt(_med(samples, "p50_ms"), 3),
                fmt(_med(samples, "p99_ms"), 3),
                fmt(_cpu(samples)),
                fmt(_cpu(samples, "origin_cpu_s")),
                fmt(_cpu(samples, "wrk_cpu_s")),
                fmt(_cpu(samples, "others_s")),
                str(sum(x.wrk.errors for x in samples)),
                passes,
            ]
        )
    unit = "MiB/s" if w.path == BIG else "req/s"
    headers = [
        "system",
        "req/s",
        "MiB/s",
        "p50 ms",
        "p99 ms",
        "CPU %",
        "origin CPU %",
        "wrk CPU %",
        "others CPU %",
        "errors",
        f"{unit} per pass",
    ]
    return [
        f"### {w.title}",
        "",
        f"`wrk -t1 -c{w.connections}` on `{w.path}`. CPU columns: % of one core during the run, for the "
        "system (all its processes), the origin behind it, wrk, and every other process on the machine "
        "(noise: near 0 in a clean run).",
        "",
        table(headers, rows),
        "",
    ]


def _ratios_section(systems: Sequence[System], results: Results, workloads: Sequence[Workload]) -> list[str]:
    edgefns = [s for s in systems if s.kind == "edgefn"]
    nginxes = [s for s in systems if s.kind == "nginx"]
    origin = next((s for s in systems if s.kind == "origin"), None)
    rows = []
    for w in workloads:
        if w.name == "latency-c1":
            continue
        attr, unit = ("mib_per_s", "MiB/s") if w.path == BIG else ("req_per_s", "req/s")
        for e in edgefns:
            ev = _med(results.samples.get((w.name, e.name), []), attr)
            cells = [w.name, f"`{e.name}` {unit}"]
            cells += [
                fmt(ratio(ev, _med(results.samples.get((w.name, n.name), []), attr)), 2) for n in nginxes
            ]
            rows.append(cells)
    out = [
        "### Ratios (edgefn / nginx, medians)",
        "",
        table(["workload", "edgefn", *[f"/ `{n.name}`" for n in nginxes]], rows),
        "",
    ]
    if origin is not None and any(w.name == "latency-c1" for w in workloads):
        base = _med(results.samples.get(("latency-c1", origin.name), []), "p50_ms")
        lat_rows = []
        for s in systems:
            if s is origin:
                continue
            p50 = _med(results.samples.get(("latency-c1", s.name), []), "p50_ms")
            lat_rows.append([f"`{s.name}`", fmt(p50, 3), fmt((p50 - base) * 1000, 0)])
        out += [
            "### Added latency (p50 via the proxy minus p50 direct to the origin, one connection)",
            "",
            f"Origin alone: p50 {fmt(base, 3)} ms.",
            "",
            table(["system", "p50 ms", "added µs"], lat_rows),
            "",
        ]
    return out


LATENCY_TARGET_MS = 1.0


def target_verdict(systems: Sequence[System], results: Results) -> list[str]:
    """The issues' targets: proxied 1 MiB GETs at >= 0.5x the MB/s of nginx, per connection count,
    and at most 1 ms of added p50 latency at one connection. The throughput verdict is given twice:
    against the faster nginx with its default proxy buffers, and against nginx with 256 KiB ones."""
    lines = []
    nginxes = [s for s in systems if s.kind == "nginx"]
    edgefns = [s for s in systems if s.kind == "edgefn"]
    for wname in ("big-c16", "big-c64"):
        if not nginxes or not any(k[0] == wname for k in results.samples):
            continue
        mib = {n.name: _med(results.samples[(wname, n.name)], "mib_per_s") for n in nginxes}
        default = max((n for n in mib if n != "nginx-bigbuf"), key=mib.__getitem__, default=None)
        for e in edgefns:
            ev = _med(results.samples[(wname, e.name)], "mib_per_s")
            ratios = ", ".join(f"{fmt(ratio(ev, v), 2)}x `{n}`" for n, v in mib.items())
            verdicts = []
            for label, name in (
                ("nginx with default buffers", default),
                ("nginx with 256 KiB buffers", "nginx-bigbuf"),
            ):
                if name in mib:
                    met = ratio(ev, mib[name]) >= 0.5
                    verdicts.append(f"**{'meets' if met else 'MISSES'}** 0.5x of {label} (`{name}`)")
            lines.append(f"- {wname}: `{e.name}` {fmt(ev, 1)} MiB/s = {ratios}: " + "; ".join(verdicts) + ".")
    origin = next((s for s in systems if s.kind == "origin"), None)
    if origin is not None and ("latency-c1", origin.name) in results.samples:
        base = _med(results.samples[("latency-c1", origin.name)], "p50_ms")
        for e in edgefns:
            added = _med(results.samples[("latency-c1", e.name)], "p50_ms") - base
            verdict = "meets" if added <= LATENCY_TARGET_MS else "MISSES"
            lines.append(
                f"- latency-c1: `{e.name}` adds {fmt(added * 1000, 0)} µs at p50 (origin alone "
                f"{fmt(base, 3)} ms): **{verdict}** the <= {LATENCY_TARGET_MS:g} ms target."
            )
    return lines


def _reading(systems: Sequence[System], results: Results, workloads: Sequence[Workload]) -> list[str]:
    out = [
        "### Target and reading",
        "",
        "Targets (issues #2 and #6): proxied 1 MiB GETs at >= 0.5x the MB/s of nginx in front of the "
        "same origin, and at most 1 ms of added p50 latency at one connection.",
        "",
        *target_verdict(systems, results),
        "",
    ]
    others = median([x.share(x.others_s) for samples in results.samples.values() for x in samples])
    if others > 20:
        out += [
            f"**This run shared the machine**: processes outside the benchmark used a median {fmt(others)} % "
            "of a core during the measurements (the `others CPU %` columns). Every figure is lower and "
            "noisier than on a quiet machine, and a Python proxy loses more to contention than nginx "
            "does; re-run on a quiet machine before quoting absolute numbers.",
            "",
        ]
    cpu_lines = []
    for w in workloads:
        for s in systems:
            if s.kind == "edgefn" and (w.name, s.name) in results.samples:
                cpu_lines.append(f"{w.name} `{s.name}` {fmt(_cpu(results.samples[(w.name, s.name)]))} %")
    if cpu_lines:
        out += [
            "CPU of edgefn (whole process group, % of one core) per workload and worker count: "
            + "; ".join(cpu_lines)
            + ". Near 100 % per worker means the Python process is the bottleneck; "
            "well below it means the cores are shared out (wrk and the origin take theirs).",
            "",
        ]
    prof = results.profile
    if prof is not None and prof.samples:

        def rows(items: list[tuple[str, float]]) -> list[list[str]]:
            return [[f"{share:.1%}", f"`{name}`"] for name, share in items]

        out += [
            f"Profile of edgefn under the 1 MiB, 64-connection load ({results.profile_note}). "
            "Shares are of all samples.",
            "",
            "Where the CPU goes, by package (own time of the innermost frame):",
            "",
            table(["own share", "package"], rows(prof.packages)),
            "",
            "Top frames by own time:",
            "",
            table(["own share", "frame"], rows(prof.own)),
            "",
            "edgefn's own functions by inclusive time (what the time above is spent under):",
            "",
            table(["inclusive share", "function"], rows(prof.project)),
            "",
        ]
    elif results.profile_note:
        out += [results.profile_note, ""]
    return out
