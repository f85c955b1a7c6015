"""What every benchmark here needs: child processes that always die, ports, wrk, medians, markdown.

Children are started in their own session (process group), so a Ctrl-C at the terminal reaches
only this process, which then stops each group in order (SIGTERM, then SIGKILL after a grace
period). SIGTERM and SIGHUP to the harness are turned into exceptions for the same reason: the
cleanup in `finally` blocks must run however the run ends.

wrk is the load generator because it is not the thing being measured and costs little CPU. Its
figures are read from a Lua `done` hook that prints exact microsecond percentiles and byte counts
as one JSON line; the human summary is parsed only if that line is missing.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import platform
import re
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

REQUIRED_TOOLS = {"nginx": "nginx-light", "wrk": "wrk"}
MIB = 1024 * 1024


class BenchError(RuntimeError):
    """The run cannot go on: a tool is missing, a system did not start, wrk failed."""


# --- tools and machine -------------------------------------------------------------------------


def missing_tools() -> dict[str, str]:
    """Tool name -> Debian package, for each required tool not on PATH (nginx lives in sbin)."""
    path = os.environ.get("PATH", "") + ":/usr/sbin:/sbin"
    return {tool: pkg for tool, pkg in REQUIRED_TOOLS.items() if shutil.which(tool, path=path) is None}


def tool_path(tool: str) -> str:
    found = shutil.which(tool, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")
    if found is None:
        raise BenchError(f"{tool} not found; install Debian package {REQUIRED_TOOLS.get(tool, tool)}")
    return found


def ensure_tools(install: bool = True) -> None:
    """Install nginx-light and wrk with apt when missing and allowed; raise with the reason if not."""
    missing = missing_tools()
    if not missing:
        return
    packages = sorted(set(missing.values()))
    if not install:
        raise BenchError(f"missing {', '.join(missing)}: apt-get install -y {' '.join(packages)}")
    if os.geteuid() != 0:
        raise BenchError(
            f"missing {', '.join(missing)} and not root: run apt-get install -y {' '.join(packages)}"
        )
    print(f"installing {' '.join(packages)} with apt-get", file=sys.stderr)
    result = subprocess.run(
        ["apt-get", "install", "-y", *packages], capture_output=True, text=True, timeout=600
    )
    if result.returncode != 0 or missing_tools():
        raise BenchError(f"apt-get install -y {' '.join(packages)} failed: {result.stderr.strip()[-500:]}")


def machine_info() -> dict[str, str]:
    cpu = platform.processor() or "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = "unknown"
    with contextlib.suppress(OSError, ValueError, IndexError):
        kib = int(Path("/proc/meminfo").read_text().split("MemTotal:", 1)[1].split()[0])
        mem = f"{kib / MIB:.1f} GiB"
    return {
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "memory": mem,
        "kernel": f"{platform.system()} {platform.release()}",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "nginx": _version([tool_path("nginx"), "-v"]),
        "wrk": _version([tool_path("wrk"), "-v"]).split(" Copyright")[0],
        "load average at start": load_average(),
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


def machine_busy_s() -> float:
    """CPU seconds all cores spent not idle since boot: the machine's load, ours and others'."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    # user nice system idle iowait irq softirq steal ...
    busy = fields[0] + fields[1] + fields[2] + fields[5] + fields[6] + (fields[7] if len(fields) > 7 else 0)
    return busy / os.sysconf("SC_CLK_TCK")


def load_average() -> str:
    with contextlib.suppress(OSError):
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    return "unknown"


def _version(argv: list[str]) -> str:
    out = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    return ((out.stdout or "") + (out.stderr or "")).strip().splitlines()[0]


# --- ports and processes -----------------------------------------------------------------------


def free_port(host: str = "127.0.0.1") -> int:
    """A port the kernel just gave out; another process could take it before us, but on a quiet
    loopback that race has not been seen, and a start that loses it fails loudly in `wait_http`."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class Terminated(BaseException):
    """SIGTERM/SIGHUP as an exception, so `finally` blocks stop the children."""


def _raise_terminated(signum: int, _frame: FrameType | None) -> None:
    raise Terminated(f"signal {signum}")


@dataclass
class Child:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def tail(self, lines: int = 15) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        return ""


class Processes:
    """Owns every child of a run; leaving the `with` block stops them all, in reverse order."""

    def __init__(self, workdir: Path, grace_s: float = 5.0) -> None:
        self.workdir = workdir
        self.grace_s = grace_s
        self.children: list[Child] = []
        self._old: dict[int, object] = {}

    def __enter__(self) -> Processes:
        for sig in (signal.SIGTERM, signal.SIGHUP):
            self._old[sig] = signal.signal(sig, _raise_terminated)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()
        for sig, handler in self._old.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]

    def start(self, name: str, argv: Sequence[str], env: dict[str, str] | None = None) -> Child:
        log = self.workdir / f"{name}.log"
        with log.open("wb") as out:
            try:
                proc = subprocess.Popen(
                    list(argv),
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                    cwd=self.workdir,
                    env=env,
                )
            except OSError as exc:
                raise BenchError(f"cannot start {name}: {shlex.join(argv)}: {exc}") from exc
        child = Child(name, proc, log)
        self.children.append(child)
        return child

    def stop(self, child: Child) -> None:
        if child.proc.poll() is None:
            _killpg(child.pid, signal.SIGTERM)
            try:
                child.proc.wait(self.grace_s)
            except subprocess.TimeoutExpired:
                _killpg(child.pid, signal.SIGKILL)
                child.proc.wait(self.grace_s)
        # Worker processes may outlive their parent's exit; the group takes them too.
        _killpg(child.pid, signal.SIGKILL)

    def stop_all(self) -> None:
        # A second Ctrl-C during cleanup must not leave children behind.
        old = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            for child in reversed(self.children):
                self.stop(child)
            self.children.clear()
        finally:
            signal.signal(signal.SIGINT, old)


def _killpg(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def wait_http(url: str, child: Child, timeout_s: float = 60.0) -> float:
    """Seconds until `url` answers 200; raise with the child's log if it dies or never answers."""
    start = time.monotonic()
    last = ""
    while time.monotonic() - start < timeout_s:
        if child.proc.poll() is not None:
            raise BenchError(f"{child.name} exited with {child.proc.returncode}:\n{child.tail()}")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    resp.read()
                    return time.monotonic() - start
                last = f"status {resp.status}"
        except urllib.error.HTTPError as exc:
            last = f"status {exc.code}"
        except (urllib.error.URLError, OSError) as exc:
            last = str(exc)
        time.sleep(0.1)
    raise BenchError(f"{child.name} did not answer {url} within {timeout_s:.0f} s ({last}):\n{child.tail()}")


# --- wrk ---------------------------------------------------------------------------------------

_DONE_LUA = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'EDGEFN_WRK {"requests": %d, "bytes": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, '
    .. '"mean_us": %f, "max_us": %d, "connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}\\n',
    summary.requests, summary.bytes, summary.duration, latency:percentile(50), latency:percentile(99),
    latency.mean, latency.max, e.connect, e.read, e.write, e.status, e.timeout))
end
"""


@dataclass(frozen=True)
class WrkResult:
    requests: int
    bytes: int
    duration_s: float
    p50_ms: float
    p99_ms: float
    errors: int  # socket errors plus non-2xx/3xx responses

    @property
    def req_per_s(self) -> float:
        return self.requests / self.duration_s if self.duration_s else 0.0

    @property
    def mib_per_s(self) -> float:
        """Bytes on the wire (headers included) per second: for 1 MiB bodies, headers are < 0.1 %."""
        return self.bytes / MIB / self.duration_s if self.duration_s else 0.0


def wrk_argv(
    url: str, *, connections: int, threads: int, duration_s: float, script: Path | None
) -> list[str]:
    argv = [
        tool_path("wrk"),
        f"-t{threads}",
        f"-c{connections}",
        f"-d{duration_s:g}s",
        "--latency",
        "--timeout",
        "10s",
    ]
    if script is not None:
        argv += ["-s", str(script)]
    return [*argv, url]


def run_wrk(
    url: str, *, connections: int, threads: int = 1, duration_s: float = 10.0, workdir: Path
) -> WrkResult:
    script = workdir / "done.lua"
    if not script.exists():
        script.write_text(_DONE_LUA)
    argv = wrk_argv(url, connections=connections, threads=threads, duration_s=duration_s, script=script)
    try:
        out = subprocess.run(
            argv, capture_output=True, text=True, timeout=duration_s + 30, start_new_session=True
        )
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"wrk did not finish within {duration_s + 30:.0f} s: {' '.join(argv)}") from exc
    if out.returncode != 0:
        raise BenchError(f"wrk failed ({out.returncode}): {out.stderr.strip() or out.stdout.strip()}")
    return parse_wrk(out.stdout)


_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0, "h": 3_600_000.0}
_SIZE = {"B": 1, "KB": 1024, "MB": MIB, "GB": 1024 * MIB, "TB": 1024 * 1024 * MIB}


def parse_wrk(text: str) -> WrkResult:
    """Read wrk's output: the JSON line of the Lua hook if present, else the human summary."""
    for line in text.splitlines():
        if line.startswith("EDGEFN_WRK "):
            d = json.loads(line[len("EDGEFN_WRK ") :])
            errors = sum(d[k] for k in ("connect", "read", "write", "status", "timeout"))
            return WrkResult(
                d["requests"],
                d["bytes"],
                d["duration_us"] / 1e6,
                d["p50_us"] / 1000,
                d["p99_us"] / 1000,
                errors,
            )
    return _parse_wrk_text(text)


def _parse_wrk_text(text: str) -> WrkResult:
    m = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m|h), ([\d.]+)([KMGT]?B) read", text)
    if m is None:
        raise BenchError(f"cannot read wrk output:\n{text[-800:]}")
    requests = int(m.group(1))
    duration_s = float(m.group(2)) * _UNITS_MS[m.group(3)] / 1000
    nbytes = int(float(m.group(4)) * _SIZE[m.group(5)])
    pct = {
        p: float(v) * _UNITS_MS[u]
        for p, v, u in re.findall(r"^\s+(\d+)%\s+([\d.]+)(us|ms|s|m|h)\s*$", text, re.M)
    }
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", text))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    errors += int(non2xx.group(1)) if non2xx else 0
    return WrkResult(
        requests, nbytes, duration_s, pct.get("50", float("nan")), pct.get("99", float("nan")), errors
    )


# --- figures and markdown ----------------------------------------------------------------------


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


def fmt(value: float, digits: int = 0) -> str:
    if value != value:  # NaN
        return "-"
    return f"{value:,.{digits}f}"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join("---" for _ in headers) + " |"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def section_markers(name: str) -> tuple[str, str]:
    return (
        f"<!-- BEGIN {name}: generated by `python -m bench`; edits here are overwritten -->",
        f"<!-- END {name} -->",
    )


DOC_INTRO = """# Performance

How fast edgefn is, measured against peers on the same machine in one run. Everything between a
`BEGIN`/`END` pair of markers below is generated; the rest is written by hand. Regenerate with
`make bench` (or `.venv/bin/python -m bench`); each benchmark rewrites only its own section, so
sections from other benchmarks (route matching, wasm invocation) live side by side.

Figures on a 2-core machine vary by up to ~30 % between runs (see the notes of each section);
compare the ratios measured within one run, not figures across runs.
"""


def write_section(doc: Path, name: str, body: str) -> None:
    """Replace section `name` of `doc` (or append it), keeping everything else as it is."""
    begin, end = section_markers(name)
    block = f"{begin}\n{body.rstrip()}\n{end}\n"
    text = doc.read_text() if doc.exists() else DOC_INTRO
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        tail = rest.split(end, 1)[1].lstrip("\n")
        text = head + block + ("\n" + tail if tail else "")
    else:
        text = text.rstrip() + "\n\n" + block
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(text)


@contextlib.contextmanager
def stopwatch() -> Iterator[list[float]]:
    out: list[float] = []
    start = time.monotonic()
    try:
        yield out
    finally:
        out.append(time.monotonic() - start)


def say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def run_bench(prefix: str, work: Callable[[Path], None], *, keep_workdir: bool = False) -> int:
    """Run one benchmark in a scratch directory; the exit status says how it ended.

    Children are stopped by the `Processes` context inside `work`; here only what is left is
    reported: 1 for a benchmark that could not run, 130 for an interrupt.
    """
    workdir = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        work(workdir)
        return 0
    except BenchError as exc:
        say(f"bench failed: {exc}")
        return 1
    except (KeyboardInterrupt, Terminated):
        say("interrupted; every child stopped")
        return 130
    finally:
        if keep_workdir:
            say(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
