"""`python -m bench`: start everything on loopback, measure, write docs/performance.md, stop everything.

Exit status: 0 after writing the figures, 1 when a system or tool failed (with the reason), 130 on
Ctrl-C. Every child is stopped in all three cases.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

from bench import proxy
from bench.harness import Processes, ensure_tools, load_average, machine_info, run_bench, say, write_section

ROOT = Path(__file__).resolve().parent.parent


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument("--passes", type=int, default=2, help="passes over every workload and system (default 2)")
    p.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run (default 10)")
    p.add_argument("--workers", default="1,2", help="edgefn worker counts to measure, comma-separated")
    p.add_argument(
        "--nginx-workers",
        type=int,
        default=1,
        help="worker_processes of the nginx origin and proxies (default 1: the core budget of "
        "`edgefn --workers 1`)",
    )
    p.add_argument(
        "--workloads",
        default=",".join(w.name for w in proxy.WORKLOADS),
        help="comma-separated subset of: " + ", ".join(w.name for w in proxy.WORKLOADS),
    )
    p.add_argument("--no-profile", action="store_true", help="skip the py-spy profile of edgefn")
    p.add_argument("--profile-duration", type=float, default=10.0)
    p.add_argument(
        "--edgefn-log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="edgefn's --log-level (default INFO: access log on, as nginx's)",
    )
    p.add_argument(
        "--edgefn-command",
        default="",
        help="command that runs edgefn in place of the venv's `edgefn` (to A/B a changed gateway); "
        "`serve --config ...` is appended",
    )
    p.add_argument("--output", type=Path, default=ROOT / "docs" / "performance.md")
    p.add_argument("--no-install", action="store_true", help="do not apt-get install missing tools")
    p.add_argument("--keep-workdir", action="store_true", help="keep configs, logs and the profile")
    args = p.parse_args(argv)
    unknown = set(args.workloads.split(",")) - {w.name for w in proxy.WORKLOADS}
    if unknown:
        p.error(f"unknown workloads: {', '.join(sorted(unknown))}")
    if args.passes < 1 or args.duration <= 0:
        p.error("--passes must be >= 1 and --duration > 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    opts = proxy.Options(
        passes=args.passes,
        duration_s=args.duration,
        edgefn_workers=tuple(int(x) for x in args.workers.split(",") if x),
        nginx_workers=args.nginx_workers,
        profile=not args.no_profile,
        profile_s=args.profile_duration,
        edgefn_log_level=args.edgefn_log_level,
        edgefn_command=args.edgefn_command,
        workloads=tuple(args.workloads.split(",")),
    )
    command = "python -m bench " + shlex.join(argv if argv is not None else sys.argv[1:])
    started = time.monotonic()

    def work(workdir: Path) -> None:
        ensure_tools(install=not args.no_install)
        machine = machine_info()
        say(f"workdir {workdir}; starting systems")
        with Processes(workdir) as procs:
            systems = proxy.start_systems(procs, workdir, opts, say)
            results = proxy.run_passes(systems, opts, workdir, say)
            single = next((s for s in systems if s.name == "edgefn-w1"), None)
            if opts.profile and single is not None:
                proxy.profile_edgefn(single, opts, workdir, results, say)
            machine["load average at end"] = load_average()
            body = proxy.render(systems, results, opts, machine, command.strip(), workdir)
        write_section(args.output, proxy.SECTION, body)
        say(f"wrote {args.output} in {time.monotonic() - started:.0f} s")
        for line in proxy.target_verdict(systems, results):
            say(line)

    return run_bench("edgefn-bench-", work, keep_workdir=args.keep_workdir)


if __name__ == "__main__":
    sys.exit(main())
