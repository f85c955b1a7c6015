"""`python -m bench.fleet`: what sharing through Redis costs and how fast changes travel.

Starts a redis-server (no persistence), one `edgefn serve` with `control_plane = "sqlite"` and two
with the same `redis://` control plane, all on loopback, and measures from a client:

- Event accept: `POST` with `x-edgefn-invocation-type: Event` until the 202, one request at a
  time, on the SQLite node (an fsync'd commit) and on a fleet node (MULTI/EXEC to Redis);
- alias move -> served elsewhere: `PUT /functions/greet/aliases/live` on node A, then how long
  until node B's Function URL answers with the new version (polled back to back);
- purge -> gone elsewhere: `POST /cache/purge` on A, then how long until B's next GET is a MISS.

Results go to the generated section of docs/fleet.md.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from bench.harness import (
    BenchError,
    Processes,
    fmt,
    free_port,
    machine_info,
    run_bench,
    say,
    table,
    wait_http,
    write_section,
)
from bench.proxy import edgefn_argv
from wasm_runtime.build import ensure_built

ROOT = Path(__file__).resolve().parent.parent
SECTION = "bench.fleet"
TOKEN = "bench-fleet-token"
AUTH = {"authorization": f"Bearer {TOKEN}"}

CONFIG = """[node]
name = "{name}"
listen = "127.0.0.1:{port}"
admin_listen = "127.0.0.1:{admin}"
data_dir = "{data}"
control_plane = "{plane}"

[origins.web]
endpoints = [{{ url = "http://127.0.0.1:{admin}" }}]

[functions.hello]
component = "{hello}"

[[routes]]
name = "event"
path = "/e"
function = "hello"

[[routes]]
name = "cached"
path = "/c/{{*rest}}"
origin = "web"
rewrite = {{ path = "/healthz" }}
cache = {{ ttl_s = 600 }}
"""


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def summary(ms: list[float]) -> list[str]:
    return [fmt(statistics.median(ms), 2), fmt(percentile(ms, 0.99), 2), fmt(max(ms), 2)]


def timed_until(check: Callable[[], bool], timeout_s: float = 10.0) -> float:
    start = time.perf_counter()
    while not check():
        if time.perf_counter() - start > timeout_s:
            raise BenchError(f"the change was not seen within {timeout_s} s")
    return (time.perf_counter() - start) * 1000


def event_latencies(client: httpx.Client, url: str, n: int) -> list[float]:
    out = []
    for _ in range(n):
        start = time.perf_counter()
        r = client.post(url, headers={"x-edgefn-invocation-type": "Event"}, content=b"{}")
        out.append((time.perf_counter() - start) * 1000)
        if r.status_code != 202:
            raise BenchError(f"Event answered {r.status_code}: {r.text[:200]}")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.fleet", description=__doc__)
    p.add_argument("--events", type=int, default=300, help="Events per node (default 300)")
    p.add_argument("--changes", type=int, default=30, help="alias moves and purges (default 30 each)")
    p.add_argument("--output", type=Path, default=ROOT / "docs" / "fleet.md")
    args = p.parse_args(argv)
    command = "python -m bench.fleet " + " ".join(argv if argv is not None else sys.argv[1:])
    redis_server = shutil.which("redis-server")
    if redis_server is None:
        say("bench.fleet: redis-server is not installed (apt-get install redis-server)")
        return 1
    hello = ensure_built(ROOT / "examples" / "hello", ROOT / "examples" / "hello" / "hello.wasm")
    argv0, env = edgefn_argv()
    env["EDGEFN_ADMIN_TOKEN"] = TOKEN

    def work(workdir: Path) -> None:
        with Processes(workdir) as procs, httpx.Client(timeout=30) as client:
            redis_port = free_port()
            redis = procs.start(
                "redis",
                [
                    redis_server,
                    "--port",
                    str(redis_port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    str(workdir),
                ],
            )
            plane = f"redis://127.0.0.1:{redis_port}/0"
            nodes: dict[str, tuple[str, str]] = {}
            for name, control in (("sqlite", "sqlite"), ("a", plane), ("b", plane)):
                port, admin = free_port(), free_port()
                config = workdir / f"{name}.toml"
                config.write_text(
                    CONFIG.format(
                        name=name, port=port, admin=admin, data=workdir / name, plane=control, hello=hello
                    )
                )
                child = procs.start(
                    name, [*argv0, "serve", "--config", str(config), "--log-level", "WARNING"], env
                )
                wait_http(f"http://127.0.0.1:{admin}/healthz", child, 180)
                nodes[name] = (f"http://127.0.0.1:{port}", f"http://127.0.0.1:{admin}")
            if redis.proc.poll() is not None:
                raise BenchError(f"redis-server exited:\n{redis.tail()}")
            rows = []
            for name in ("sqlite", "a"):
                url = nodes[name][0] + "/e"
                event_latencies(client, url, 20)  # warm up
                say(f"Event accept on the {name} node ...")
                rows.append(
                    [
                        "SQLite (fsync'd commit)" if name == "sqlite" else "Redis (MULTI/EXEC)",
                        *summary(event_latencies(client, url, args.events)),
                    ]
                )

            a_admin, b_url = nodes["a"][1], nodes["b"][0]
            say("alias moves ...")
            client.post(
                f"{a_admin}/functions/greet/code", content=hello.read_bytes(), headers=AUTH
            ).raise_for_status()
            client.post(f"{a_admin}/functions/greet/versions", headers=AUTH).raise_for_status()
            client.put(f"{a_admin}/functions/greet/configuration", json={"env": {"V": "2"}}, headers=AUTH)
            client.post(f"{a_admin}/functions/greet/versions", headers=AUTH).raise_for_status()
            client.put(f"{a_admin}/functions/greet/aliases/live", json={"version": 1}, headers=AUTH)
            made = client.post(f"{a_admin}/functions/greet/urls", json={"qualifier": "live"}, headers=AUTH)
            made.raise_for_status()
            host = {"host": f"{made.json()['url_id']}.fn.localhost"}

            def b_serves(version: str) -> Callable[[], bool]:
                return lambda: (
                    client.get(b_url + "/", headers=host).headers.get("x-edgefn-executed-version") == version
                )

            timed_until(b_serves("1"), 60)
            moves = []
            for i in range(args.changes):
                version = "2" if i % 2 == 0 else "1"
                client.put(
                    f"{a_admin}/functions/greet/aliases/live", json={"version": int(version)}, headers=AUTH
                )
                moves.append(timed_until(b_serves(version)))

            say("purges ...")
            purges = []
            for _ in range(args.changes):
                client.get(b_url + "/c/page", headers={"host": "cdn.test"})
                if (
                    client.get(b_url + "/c/page", headers={"host": "cdn.test"}).headers.get("x-cache")
                    != "HIT"
                ):
                    raise BenchError("node b did not cache /c/page")
                client.post(f"{a_admin}/cache/purge", json={"prefix": "cdn.test/"}, headers=AUTH)
                purges.append(
                    timed_until(
                        lambda: (
                            client.get(b_url + "/c/page", headers={"host": "cdn.test"}).headers["x-cache"]
                            == "MISS"
                        )
                    )
                )
        info = machine_info()
        body = "\n".join(
            [
                "## Measured",
                "",
                f"`{command.strip()}` on {info.get('cpu', '?')} ({info.get('cores', '?')} cores), "
                f"{info.get('python', '')}, load average at start {info.get('load average at start', '?')}; "
                "client and servers on one machine over loopback, one request at a time.",
                "",
                f"Event accept, {args.events} requests per node (202 round trip, ms):",
                "",
                table(["store", "p50", "p99", "max"], rows),
                "",
                f"A change on node A seen on node B, {args.changes} each "
                "(ms from A's answer until B shows it, B polled back to back):",
                "",
                table(
                    ["change", "p50", "p99", "max"],
                    [
                        ["alias move -> B serves the version", *summary(moves)],
                        ["purge -> B's next GET is a MISS", *summary(purges)],
                    ],
                ),
            ]
        )
        write_section(args.output, SECTION, body)
        say(f"wrote {args.output}")

    return run_bench("edgefn-bench-fleet-", work)


if __name__ == "__main__":
    sys.exit(main())
