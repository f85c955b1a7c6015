"""`python -m bench.cache`: latency of a cache HIT, against the same request proxied and against nginx.

One nginx serves static files with `Cache-Control: max-age=3600` (the origin). In front of it:

- `edgefn` with two routes to that origin, `/c/...` with `cache = { ttl_s = 3600 }` (every request
  after the first is a HIT) and `/p/...` without a cache (every request goes to the origin);
- nginx with `proxy_cache` (the peer's cache HIT), for scale.

Each workload (body size x connections) runs against each system in turn, pass after pass, and
medians are reported. Before a run the edgefn cache path is checked to answer `x-cache: HIT`, and
after it the admin API's hit count must have grown by the number of requests wrk made, so the
figures are of hits, not of misses. Results go to the generated section of docs/cache.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.request
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench.harness import (
    BenchError,
    Child,
    Processes,
    WrkResult,
    ensure_tools,
    fmt,
    free_port,
    machine_info,
    median,
    run_bench,
    run_wrk,
    say,
    table,
    tool_path,
    wait_http,
    write_section,
)
from bench.proxy import _nginx_common, edgefn_argv

ROOT = Path(__file__).resolve().parent.parent
SECTION = "bench.cache"
TOKEN = "bench-cache-token"
SIZES = {"1k": 1024, "64k": 64 * 1024}


@dataclass(frozen=True)
class Workload:
    name: str
    file: str
    connections: int


WORKLOADS = tuple(Workload(f"{size}-c{c}", f"/{size}.bin", c) for size in SIZES for c in (1, 16))


@dataclass(frozen=True)
class System:
    name: str
    title: str
    base_url: str  # workload paths are appended
    child: Child


@dataclass
class Results:
    samples: dict[tuple[str, str], list[WrkResult]] = field(default_factory=lambda: defaultdict(list))
    hits_checked: list[str] = field(default_factory=list)


def _common(workdir: Path, name: str) -> str:
    """bench.proxy's nginx settings without tcp_nopush: with sendfile it held 64 KiB answers back
    ~40 ms (a delayed ACK) at p50 for the cache and p99 for the origin on this machine."""
    return _nginx_common(workdir, name, 1).replace("tcp_nopush on;", "tcp_nopush off;")


def origin_conf(workdir: Path, port: int, www: Path) -> str:
    return (
        _common(workdir, "origin")
        + f"""  access_log off;
  server {{
    listen 127.0.0.1:{port};
    root {www};
    add_header cache-control "max-age=3600";
    location = /healthz {{ return 200 "ok\\n"; }}
  }}
}}
"""
    )


def nginx_cache_conf(workdir: Path, port: int, origin_port: int) -> str:
    store = workdir / "nginx-cache-store"
    store.mkdir(exist_ok=True)
    store.chmod(0o777)
    return (
        _common(workdir, "nginx-cache")
        + f"""  access_log off;
  proxy_cache_path {store} keys_zone=edge:10m max_size=256m;
  upstream origin {{
    server 127.0.0.1:{origin_port};
    keepalive 64;
  }}
  server {{
    listen 127.0.0.1:{port};
    location / {{
      proxy_pass http://origin;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_cache edge;
      add_header x-cache $upstream_cache_status;
    }}
  }}
}}
"""
    )


def edgefn_toml(workdir: Path, port: int, admin_port: int, origin_port: int) -> str:
    return f"""[node]
name = "bench-cache"
listen = "127.0.0.1:{port}"
admin_listen = "127.0.0.1:{admin_port}"
data_dir = "{workdir / "edgefn-data"}"

[origins.web]
endpoints = [{{ url = "http://127.0.0.1:{origin_port}" }}]

[[routes]]
name = "cached"
path = "/c/{{*rest}}"
origin = "web"
rewrite = {{ path = "/{{rest}}" }}
cache = {{ ttl_s = 3600 }}

[[routes]]
name = "proxied"
path = "/p/{{*rest}}"
origin = "web"
rewrite = {{ path = "/{{rest}}" }}
"""


def _nginx(procs: Processes, workdir: Path, name: str, conf: str) -> Child:
    path = workdir / f"{name}.conf"
    path.write_text(conf)
    nginx = tool_path("nginx")
    return procs.start(name, [nginx, "-c", str(path), "-p", str(workdir)])


def x_cache(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        response.read()
        return str(response.headers.get("x-cache", "-"))


def admin_hits(admin: str) -> int:
    request = urllib.request.Request(admin + "/cache", headers={"authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(request, timeout=5) as response:
        return int(json.load(response)["hits"])


def start(
    procs: Processes, workdir: Path, log_level: str, say: Callable[[str], None]
) -> tuple[list[System], str]:
    www = workdir / "www"
    www.mkdir()
    for name, size in SIZES.items():
        (www / f"{name}.bin").write_bytes(os.urandom(size))
    for p in (workdir, www, *www.iterdir()):
        p.chmod(0o755 if p.is_dir() else 0o644)
    origin_port, nginx_port, port, admin = free_port(), free_port(), free_port(), free_port()
    origin = _nginx(procs, workdir, "origin", origin_conf(workdir, origin_port, www))
    wait_http(f"http://127.0.0.1:{origin_port}/healthz", origin)
    nginx = _nginx(procs, workdir, "nginx-cache", nginx_cache_conf(workdir, nginx_port, origin_port))
    conf = workdir / "edgefn.toml"
    conf.write_text(edgefn_toml(workdir, port, admin, origin_port))
    base, env = edgefn_argv()
    env["EDGEFN_ADMIN_TOKEN"] = TOKEN
    edgefn = procs.start("edgefn", [*base, "serve", "--config", str(conf), "--log-level", log_level], env=env)
    systems = [
        System("origin", "nginx static origin alone (no proxy)", f"http://127.0.0.1:{origin_port}", origin),
        System("nginx-cache-hit", "nginx proxy_cache, HIT", f"http://127.0.0.1:{nginx_port}", nginx),
        System("edgefn-cache-hit", "edgefn, route with cache, HIT", f"http://127.0.0.1:{port}/c", edgefn),
        System(
            "edgefn-proxied", "edgefn, route without cache (to origin)", f"http://127.0.0.1:{port}/p", edgefn
        ),
    ]
    for s in systems:
        wait_http(s.base_url + "/1k.bin", s.child, timeout_s=90)
    for s in systems:
        if "hit" in s.name:
            for w in WORKLOADS:
                x_cache(s.base_url + w.file)  # fill
                state = x_cache(s.base_url + w.file)
                if state != "HIT":
                    raise BenchError(f"{s.name}{w.file} answers x-cache {state}, not HIT")
    say(f"systems up: {', '.join(s.name for s in systems)}")
    return systems, f"http://127.0.0.1:{admin}"


def run(
    systems: list[System],
    admin: str,
    passes: int,
    duration_s: float,
    workdir: Path,
    say: Callable[[str], None],
) -> Results:
    results = Results()
    for n in range(passes):
        for w in WORKLOADS:
            for s in systems:
                before = admin_hits(admin) if s.name == "edgefn-cache-hit" else 0
                result = run_wrk(
                    s.base_url + w.file, connections=w.connections, duration_s=duration_s, workdir=workdir
                )
                if s.name == "edgefn-cache-hit":
                    hits = admin_hits(admin) - before
                    # wrk counts completed requests; the ones cut off at the end were hits too
                    if hits < result.requests:
                        raise BenchError(f"{w.name}: {result.requests} requests but {hits} cache hits")
                    results.hits_checked.append(f"{w.name}: {result.requests} requests, {hits} hits")
                if result.errors:
                    raise BenchError(f"{s.name} {w.name}: {result.errors} errors")
                results.samples[(w.name, s.name)].append(result)
                say(
                    f"pass {n + 1} {w.name:8} {s.name:17} p50 {result.p50_ms:7.3f} ms "
                    f"p99 {result.p99_ms:7.3f} ms {result.req_per_s:9.0f} req/s"
                )
    return results


def render(
    systems: list[System],
    results: Results,
    machine: dict[str, str],
    command: str,
    passes: int,
    duration_s: float,
) -> str:
    out = [
        "## Cache-hit latency",
        "",
        "```sh",
        command,
        "```",
        "",
        f"{passes} pass(es) of {duration_s:g} s per workload and system (wrk, one thread, on the same "
        "2 cores as the servers); medians of the passes. edgefn runs `serve --workers 1`. Every "
        "edgefn cache request of the runs was a HIT (admin API hit count checked after each run).",
        "",
        table(["", ""], [[k, v] for k, v in machine.items()]),
        "",
    ]
    for w in WORKLOADS:
        out += [f"### {w.file.strip('/')} body, {w.connections} connection(s)", ""]
        rows = []
        for s in systems:
            got = results.samples.get((w.name, s.name), [])
            rows.append(
                [
                    s.title,
                    fmt(median([r.p50_ms for r in got]), 3),
                    fmt(median([r.p99_ms for r in got]), 3),
                    fmt(median([r.req_per_s for r in got])),
                ]
            )
        out += [table(["system", "p50 ms", "p99 ms", "req/s"], rows), ""]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.cache", description=__doc__)
    p.add_argument("--passes", type=int, default=2)
    p.add_argument("--duration", type=float, default=5.0, help="seconds per wrk run (default 5)")
    p.add_argument("--log-level", default="WARNING", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    p.add_argument("--output", type=Path, default=ROOT / "docs" / "cache.md")
    p.add_argument("--no-install", action="store_true", help="do not apt-get install nginx/wrk")
    args = p.parse_args(argv)
    command = "python -m bench.cache " + " ".join(argv if argv is not None else sys.argv[1:])

    started = time.monotonic()

    def work(workdir: Path) -> None:
        ensure_tools(install=not args.no_install)
        with Processes(workdir) as procs:
            systems, admin = start(procs, workdir, args.log_level, say)
            results = run(systems, admin, args.passes, args.duration, workdir, say)
        body = render(systems, results, machine_info(), command.strip(), args.passes, args.duration)
        write_section(args.output, SECTION, body)
        say(f"wrote {args.output} in {time.monotonic() - started:.0f} s")

    return run_bench("edgefn-bench-cache-", work)


if __name__ == "__main__":
    sys.exit(main())
