"""RSS while 1,000 slow streams are held open: through a proxied origin, and from a light guest.

    python -m bench.held_streams [--held 1000] [--hold-s 10] [--output docs/performance.md]

A held stream through a Python guest holds that guest's instance (about 10 MB of linear memory
for a componentize-py guest), so 1,000 guest streams cannot fit in 500 MB whatever the gateway
does. What the host itself costs per held stream shows two ways:

- proxied: the origin (`examples/origin.py`, its own process) sends 16 bytes, pauses
  `--origin-pause-s`, then 16 more; edgefn (one worker) proxies it on `/slow`;
- a light guest: bench/guests/light, written in WAT (a page of memory per instance), writes 16
  bytes a second, in edgefn (one worker, `wasm_threads` raised so that one function may hold all
  the streams) and in `wasmtime serve`, the same .wasm file.

`bench.wasm_client hold` opens `--held` streams at once and keeps them open `--hold-s`; the RSS of
the server's process group is sampled meanwhile. Writes the section `bench.held_streams`.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from bench import light_guest, wasm_peers
from bench.harness import Child, Processes, free_port, load_average, run_bench, say, write_section
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


def _light_toml(port: int, admin: int, data: Path, component: Path, held: int) -> str:
    return "\n".join(
        [
            "[node]",
            f'listen = "127.0.0.1:{port}"',
            f'admin_listen = "127.0.0.1:{admin}"',
            f'data_dir = "{data}"',
            f"wasm_threads = {held * 8 // 7 + 8}  # one function may hold seven eighths of them",
            "",
            "[functions.light]",
            f'component = "{component}"',
            "timeout_s = 900",
            "",
            "[[routes]]",
            'name = "light"',
            'path = "/light"',
            'function = "light"',
            "",
        ]
    )


def _hold(child: Child, urls: list[tuple[str, int]], hold_s: float, check: bool) -> tuple[dict, float, float]:
    """Holds `n` streams on each (url, n) at once; the client's totals and the RSS of `child`'s
    process group in MiB before and at its peak."""
    idle, _ = group_memory_mb(child.pid)
    with MemorySampler(child.pid, period_s=0.2) as mem:
        clients = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "bench.wasm_client",
                    "hold",
                    url,
                    "--connections",
                    str(n),
                    "--hold-s",
                    f"{hold_s:g}",
                    *([] if check else ["--no-check"]),
                ],
                stdout=subprocess.PIPE,
                cwd=ROOT,
            )
            for url, n in urls
        ]
        outs = [c.communicate(timeout=hold_s + 300)[0] for c in clients]
    parts = [json.loads(out.decode().strip().splitlines()[-1]) for out in outs]
    result = {k: sum(int(p.get(k, 0)) for p in parts) for k in ("answered", "with_body", "error_count")}
    return result, idle, mem.peak_rss


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
        rows: list[tuple[str, dict, float, float]] = []
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
            share = [
                args.held // n_origins + (1 if i < args.held % n_origins else 0) for i in range(n_origins)
            ]
            urls = [
                (f"http://127.0.0.1:{port}/slow{i}?first=16&wait={args.origin_pause_s:g}", n)
                for i, n in enumerate(share)
            ]
            rows.append(("edgefn, proxied slow origin", *_hold(edgefn, urls, args.hold_s, check=False)))
            procs.stop_all()

            light = light_guest.build()
            port, admin = free_port(), free_port()
            conf = workdir / "edgefn-light.toml"
            conf.write_text(_light_toml(port, admin, workdir / "data-light", light, args.held))
            url = f"http://127.0.0.1:{port}/light"
            edgefn, _ = spawn(
                procs,
                "edgefn-light",
                [*base, "serve", "--config", str(conf), "--workers", "1", "--log-level", "WARNING"],
                url,
                env=env,
                read_body=False,
            )
            rows.append(("edgefn, light guest", *_hold(edgefn, [(url, args.held)], args.hold_s, check=True)))
            procs.stop(edgefn)

            port = free_port()
            binary = wasm_peers.wasmtime_binary(wasm_peers.cache_dir())
            url = f"http://127.0.0.1:{port}/light"
            wasmtime, _ = spawn(
                procs,
                "wasmtime-light",
                wasm_peers.wasmtime_serve_argv(binary, port, light),
                url,
                read_body=False,
            )
            rows.append(
                ("`wasmtime serve`, light guest", *_hold(wasmtime, [(url, args.held)], args.hold_s, True))
            )
        table = [
            "| system | held | answered | with body | errors | RSS idle | RSS peak | per stream | target |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
        ]
        for name, result, idle, peak in rows:
            per_stream_kib = (peak - idle) * 1024 / args.held
            met = peak <= 500 and result.get("with_body") == args.held
            say(
                f"held {args.held} streams, {name}: answered {result.get('answered')} with body "
                f"{result.get('with_body')} errors {result.get('error_count')} rss {idle:.0f} -> "
                f"{peak:.0f} MiB ({per_stream_kib:.0f} KiB per stream)"
            )
            table.append(
                f"| {name} | {args.held} | {result.get('answered')} | {result.get('with_body')} | "
                f"{result.get('error_count')} | {idle:.0f} MiB | {peak:.0f} MiB | {per_stream_kib:.0f} KiB | "
                f"all served in <= 500 MB: {'met' if met else 'missed'} |"
            )
        body = "\n".join(
            [
                "## Held streams: a proxied origin and a light guest (bench.held_streams)",
                "",
                f"Command: `{command.strip()}`; load average at the end {load_average()}.",
                "",
                *table,
                "",
                "Proxied: edgefn (one worker) proxies slow origins (16 bytes, then a pause longer than the "
                "hold; one origin per 250 streams, as the gateway opens at most 256 connections per origin "
                "host). Light guest: bench/guests/light (WAT, a page of memory per instance) writes 16 bytes "
                "a second, every byte checked by the client; edgefn runs it with `wasm_threads` raised to "
                f"{args.held * 8 // 7 + 8} (one function may hold seven eighths of them; the default 512 "
                "lets 448 start and the rest wait, then get 429), `wasmtime serve` with its defaults, on "
                "the same .wasm file. RSS of the server's process group, sampled every 0.2 s. The same "
                "streams from a componentize-py guest are not possible in 500 MB in either host: each "
                "running guest holds its instance (about 10 MB of linear memory), bench.wasm's held row.",
            ]
        )
        write_section(args.output, SECTION, body)
        say(f"wrote {args.output}")

    return run_bench("edgefn-bench-held-", work)


if __name__ == "__main__":
    sys.exit(main())
