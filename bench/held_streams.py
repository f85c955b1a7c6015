"""RSS of edgefn holding 1,000 slow streams from a PROXIED origin (not a wasm guest).

    python -m bench.held_streams [--held 1000] [--hold-s 10] [--output docs/performance.md]

A held stream through a Python guest holds that guest's instance (about 10 MB of linear memory
for a componentize-py guest), so 1,000 guest streams cannot fit in 500 MB whatever the gateway
does; the gateway's own cost per held stream is what a slow proxied origin shows. The origin
(`examples/origin.py`, its own process) sends 16 bytes, pauses `--origin-pause-s`, then 16 more;
edgefn (one worker) proxies it on `/slow`; `bench.wasm_client hold` opens `--held` streams at
once and keeps them open `--hold-s`; the RSS of edgefn's process group is sampled meanwhile.
Writes the section `bench.held_streams` of the output.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from bench.harness import Processes, free_port, load_average, run_bench, say, write_section
from bench.proxy import edgefn_argv
from bench.wasm import ROOT, MemorySampler, group_memory_mb, raise_nofile, spawn

SECTION = "bench.held_streams"


def _toml(port: int, admin: int, data: Path, origins: list[int]) -> str:
    out = [
        "[node]",
        f'listen = "127.0.0.1:{port}"',
        f'admin_listen = "127.0.0.1:{admin}"',
        f'data_dir = "{data}"',
        "",
    ]
    for i, origin in enumerate(origins):
        out += [
            f"[origins.slow{i}]",
            f'endpoints = [{{ url = "http://127.0.0.1:{origin}" }}]',
            "timeouts = { connect_s = 5, read_s = 600 }",
            "",
            "[[routes]]",
            f'name = "slow{i}"',
            f'path = "/slow{i}"',
            f'origin = "slow{i}"',
            'rewrite = { path = "/pause" }',
            "",
        ]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.held_streams", description=__doc__)
    p.add_argument("--held", type=int, default=1000)
    p.add_argument("--hold-s", type=float, default=10.0)
    p.add_argument("--origin-pause-s", type=float, default=60.0)
    p.add_argument("--output", type=Path, default=ROOT / "docs" / "performance.md")
    args = p.parse_args(argv)
    if args.held < 1 or args.hold_s <= 0:
        p.error("--held must be >= 1 and --hold-s > 0")
    command = "python -m bench.held_streams " + " ".join(argv if argv is not None else sys.argv[1:])

    def work(workdir: Path) -> None:
        raise_nofile(args.held * 3 + 1024)
        port, admin = free_port(), free_port()
        # the gateway opens at most 256 connections per origin host (gateway/origin_transport.py's
        # PoolLimits.max_per_host): the streams are spread over enough origins to stay under it
        n_origins = max(1, -(-args.held // 250))
        ports = [free_port() for _ in range(n_origins)]
        conf = workdir / "edgefn.toml"
        conf.write_text(_toml(port, admin, workdir / "data", ports))
        with Processes(workdir) as procs:
            for i, origin_port in enumerate(ports):
                spawn(
                    procs,
                    f"origin{i}",
                    [sys.executable, str(ROOT / "examples" / "origin.py"), str(origin_port)],
                    f"http://127.0.0.1:{origin_port}/healthz",
                )
            base, env = edgefn_argv("")
            edgefn, _ = spawn(
                procs,
                "edgefn",
                [*base, "serve", "--config", str(conf), "--workers", "1", "--log-level", "WARNING"],
                f"http://127.0.0.1:{port}/slow0?first=1&wait=0",
                env=env,
            )
            idle, _ = group_memory_mb(edgefn.pid)
            share = [
                args.held // n_origins + (1 if i < args.held % n_origins else 0) for i in range(n_origins)
            ]
            with MemorySampler(edgefn.pid, period_s=0.2) as mem:
                clients = [
                    subprocess.Popen(
                        [
                            sys.executable,
                            "-m",
                            "bench.wasm_client",
                            "hold",
                            f"http://127.0.0.1:{port}/slow{i}?first=16&wait={args.origin_pause_s:g}",
                            "--connections",
                            str(n),
                            "--hold-s",
                            f"{args.hold_s:g}",
                            "--no-check",
                        ],
                        stdout=subprocess.PIPE,
                        cwd=ROOT,
                    )
                    for i, n in enumerate(share)
                ]
                outs = [c.communicate(timeout=args.hold_s + 300)[0] for c in clients]
            parts = [json.loads(out.decode().strip().splitlines()[-1]) for out in outs]
            result = {
                k: sum(int(p.get(k, 0)) for p in parts) for k in ("answered", "with_body", "error_count")
            }
        per_stream_kib = (mem.peak_rss - idle) * 1024 / args.held
        say(
            f"held {args.held} proxied streams: answered {result.get('answered')} with body "
            f"{result.get('with_body')} errors {result.get('error_count')} rss {idle:.0f} -> "
            f"{mem.peak_rss:.0f} MiB ({per_stream_kib:.0f} KiB per stream)"
        )
        body = "\n".join(
            [
                "## Held streams through a proxied origin (bench.held_streams)",
                "",
                f"Command: `{command.strip()}`; load average at the end {load_average()}.",
                "",
                "| held | answered | with body | errors | RSS idle | RSS peak | per stream | target |",
                "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
                f"| {args.held} | {result.get('answered')} | {result.get('with_body')} | "
                f"{result.get('error_count')} | {idle:.0f} MiB | {mem.peak_rss:.0f} MiB | "
                f"{per_stream_kib:.0f} KiB | <= 500 MB: {'met' if mem.peak_rss <= 500 else 'missed'} |",
                "",
                "edgefn (one worker) proxies slow origins (16 bytes, then a pause longer than the hold; one "
                "origin per 250 streams, as the gateway opens at most 256 connections per origin host); "
                "RSS of edgefn's process group, sampled every 0.2 s. The same 1,000 streams from a Python "
                "guest are not possible in 500 MB: each running guest holds its instance (about 10 MB of "
                "linear memory for a componentize-py guest), about 10 GB for 1,000, and each holds one of "
                "the runtime's guest threads (`[node] wasm_threads`, default 512: the 513th waits, then "
                "gets 429).",
            ]
        )
        write_section(args.output, SECTION, body)
        say(f"wrote {args.output}")

    return run_bench("edgefn-bench-held-", work)


if __name__ == "__main__":
    sys.exit(main())
