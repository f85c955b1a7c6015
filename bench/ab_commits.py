"""`python -m bench.ab_commits REV...`: gateway CPU per request of several commits, alternating.

The harness's runs minutes apart differ by more than one small change is worth when the machine
is shared (others' CPU moves every figure). Here every commit is checked out into its own
worktree and served at once, each in front of the same nginx origin, and short wrk runs go
A B C A B C ... so that drift lands on every commit alike. The figure is the gateway's process
group CPU seconds per request (less sensitive to contention than req/s) and p50, medians of the
rounds. Prints a Markdown table; nothing is written to docs/.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from bench.harness import Processes, fmt, free_port, median, run_bench, run_wrk, say, table, wait_http
from bench.proxy import ROOT, TINY, _start_nginx, edgefn_toml, group_cpu_s, origin_conf, write_www


def _worktree(workdir: Path, rev: str) -> Path:
    path = workdir / f"tree-{rev}"
    subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "add", "--detach", "-f", str(path), rev],
        check=True,
        capture_output=True,
        timeout=120,
    )
    return path


def _remove_worktree(path: Path) -> None:
    subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(path)], capture_output=True, timeout=120
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ab_commits", description=__doc__)
    parser.add_argument("revs", nargs="+", help="git revisions to compare (first is the baseline)")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=1)
    opts = parser.parse_args(argv)

    def work(workdir: Path) -> None:
        trees = [_worktree(workdir, rev) for rev in opts.revs]
        try:
            with Processes(workdir) as procs:
                www = write_www(workdir)
                origin_port = free_port()
                _start_nginx(procs, workdir, "origin", origin_conf(workdir, origin_port, www, 1))
                urls: list[str] = []
                children = []
                for i, (rev, tree) in enumerate(zip(opts.revs, trees, strict=True)):
                    name = f"edgefn-{i}"
                    port = free_port()
                    conf = workdir / f"{name}.toml"
                    conf.write_text(edgefn_toml(workdir, name, port, free_port(), origin_port))
                    env = dict(os.environ, PYTHONPATH=str(tree))
                    argv = [sys.executable, "-m", "gateway.cli", "serve", "--config", str(conf)]
                    child = procs.start(name, [*argv, "--workers", "1", "--log-level", "INFO"], env=env)
                    url = f"http://127.0.0.1:{port}"
                    wait_http(url + TINY, child, timeout_s=90)
                    say(f"  {rev}: up on {url}")
                    urls.append(url)
                    children.append(child)
                cpu_per_req: list[list[float]] = [[] for _ in opts.revs]
                p50: list[list[float]] = [[] for _ in opts.revs]
                for r in range(opts.rounds + 1):
                    for i, (url, child) in enumerate(zip(urls, children, strict=True)):
                        before = group_cpu_s(child.pid)
                        res = run_wrk(
                            url + TINY,
                            connections=opts.connections,
                            duration_s=opts.duration,
                            workdir=workdir,
                        )
                        used = group_cpu_s(child.pid) - before
                        if r == 0:
                            continue  # warm-up round
                        cpu_per_req[i].append(1000 * used / max(1, res.requests))
                        p50[i].append(res.p50_ms)
                    if r:
                        say(f"round {r}: " + ", ".join(f"{c[-1]:.3f}" for c in cpu_per_req))
                base = median(cpu_per_req[0])
                rows = [
                    [
                        f"`{rev}`",
                        fmt(median(cpu_per_req[i]), 3),
                        fmt(100 * (median(cpu_per_req[i]) / base - 1), 1),
                        fmt(median(p50[i]), 3),
                    ]
                    for i, rev in enumerate(opts.revs)
                ]
                print(table(["commit", "CPU ms / request", "vs first %", "p50 ms"], rows))
                print(
                    f"\n{opts.rounds} rounds of {opts.duration:g} s, wrk -t1 -c{opts.connections} {TINY};"
                    f" load average at the end {os.getloadavg()[0]:.1f}"
                )
        finally:
            for tree in trees:
                _remove_worktree(tree)

    return run_bench("edgefn-ab-", work)


if __name__ == "__main__":
    raise SystemExit(main())
