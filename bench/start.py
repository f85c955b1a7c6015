"""`python -m bench.start [REV...]`: restart to first response, where the time goes, by commit.

Each revision is checked out into its own worktree and started as `edgefn serve --workers 1` with
one function (hello) from a warm compile cache, alternating A B A B ... so that the load of a
shared machine lands on every revision alike. Per revision, medians of the rounds:

- `python`: the interpreter alone (`python -c pass`);
- `imports`: the modules `edgefn serve` imports before it reads the config (`gateway.cli`,
  `gateway.server`), timed inside the interpreter;
- `first 200`: spawn to the first 200 from the function, polled every 2 ms (bench.wasm's figure),
  and the CPU the process had used by then (user + system, from /proc);
- `load`: the component's own load (deserialize + link) from the log.

The trees are byte-compiled first (`compileall`), as `pip install` does for the container image;
`--no-bytecode` measures sources compiled at every start instead (PYTHONDONTWRITEBYTECODE=1, as in
a checkout run with that variable set). Prints a Markdown table; nothing is written to docs/.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.ab_commits import _remove_worktree, _worktree
from bench.harness import Processes, fmt, free_port, median, run_bench, say, table
from bench.wasm import EXAMPLES, byte_compile, first_200

# In-process time: a process's wall time would add its exit (modules torn down, threads joined).
IMPORTS = (
    "import time; t = time.perf_counter(); import gateway.cli, gateway.server; print(time.perf_counter() - t)"
)
_LOADED = re.compile(r"loaded hello sha256=\w+ from cache in ([\d.]+) ms")


@dataclass
class Figures:
    python_s: list[float] = field(default_factory=list)
    imports_s: list[float] = field(default_factory=list)
    first_s: list[float] = field(default_factory=list)
    cpu_s: list[float] = field(default_factory=list)
    load_ms: list[float] = field(default_factory=list)


def config(tree: Path, data: Path, port: int) -> Path:
    """bench.wasm's restart config: hello on /hello, the admin listener on a port of its own."""
    path = tree.parent / f"{tree.name}.toml"
    path.write_text(
        "\n".join(
            [
                "[node]",
                f'name = "{tree.name}"',
                f'listen = "127.0.0.1:{port}"',
                f'admin_listen = "127.0.0.1:{free_port()}"',
                f'data_dir = "{data}"',
                "",
                "[functions.hello]",
                f'component = "{EXAMPLES["hello"]}"',
                "",
                "[[routes]]",
                'name = "hello"',
                'path = "/hello"',
                'function = "hello"',
                "",
            ]
        )
    )
    return path


def cpu_s(pid: int) -> float:
    """User + system CPU seconds a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def timed(argv: list[str], cwd: Path, env: dict[str, str]) -> float:
    started = time.monotonic()
    subprocess.run(argv, cwd=cwd, env=env, check=True, timeout=120)
    return time.monotonic() - started


def import_s(tree: Path, env: dict[str, str]) -> float:
    out = subprocess.run(
        [sys.executable, "-c", IMPORTS],
        cwd=tree,
        env=env,
        check=True,
        timeout=120,
        capture_output=True,
        text=True,
    )
    return float(out.stdout.split()[-1])


def one_start(
    procs: Processes, name: str, tree: Path, conf: Path, port: int, env: dict[str, str]
) -> tuple[float, float, float | None]:
    argv = [sys.executable, "-m", "gateway.cli", "serve", "--config", str(conf), "--log-level", "INFO"]
    started = time.monotonic()
    child = procs.start(name, argv, env={**env, "PYTHONPATH": str(tree)})
    seconds = first_200(f"http://127.0.0.1:{port}/hello", child, started, timeout_s=180)
    cpu = cpu_s(child.pid)
    procs.stop(child)
    m = _LOADED.search(child.log.read_text(errors="replace"))
    return seconds, cpu, float(m.group(1)) if m else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.start", description=__doc__)
    parser.add_argument("revs", nargs="*", default=["HEAD"], help="git revisions (default HEAD)")
    parser.add_argument("--runs", type=int, default=10, help="warm starts per revision (default 10)")
    parser.add_argument("--no-bytecode", action="store_true", help="compile sources at every start")
    opts = parser.parse_args(argv)
    if opts.runs < 1:
        parser.error("--runs must be >= 1")
    if not EXAMPLES["hello"].exists():
        parser.error(f"{EXAMPLES['hello']} is missing: build it with `make examples`")
    env = dict(os.environ)
    if opts.no_bytecode:
        env["PYTHONDONTWRITEBYTECODE"] = "1"

    def work(workdir: Path) -> None:
        trees = [_worktree(workdir, rev) for rev in opts.revs]
        compiled = workdir / "compiled"  # one compile cache: every tree's engine settings key it
        compiled.mkdir()
        figures = {rev: Figures() for rev in opts.revs}
        try:
            with Processes(workdir) as procs:
                starts = []
                for i, tree in enumerate(trees):
                    if not opts.no_bytecode:
                        byte_compile(tree)
                    data = workdir / f"data-{i}"
                    data.mkdir()
                    (data / "compiled").symlink_to(compiled, target_is_directory=True)
                    port = free_port()
                    starts.append((tree, config(tree, data, port), port))
                    say(f"{opts.revs[i]}: first start (fills the compile cache when empty)")
                    one_start(procs, f"start-{i}", tree, starts[-1][1], port, env)
                for run in range(opts.runs):
                    for i, (tree, conf, port) in enumerate(starts):
                        f = figures[opts.revs[i]]
                        f.python_s.append(timed([sys.executable, "-c", "pass"], tree, env))
                        f.imports_s.append(import_s(tree, env))
                        seconds, cpu, load = one_start(procs, f"start-{i}", tree, conf, port, env)
                        f.first_s.append(seconds)
                        f.cpu_s.append(cpu)
                        if load is not None:
                            f.load_ms.append(load)
                    say(
                        f"round {run + 1}/{opts.runs}: "
                        + ", ".join(f"{rev} {figures[rev].first_s[-1] * 1000:.0f} ms" for rev in opts.revs)
                    )
        finally:
            for tree in trees:
                _remove_worktree(tree)
        rows = [
            [
                rev,
                fmt(median(f.python_s) * 1000),
                fmt(median(f.imports_s) * 1000),
                fmt(median(f.first_s) * 1000),
                f"{min(f.first_s) * 1000:.0f}-{max(f.first_s) * 1000:.0f}",
                fmt(median(f.cpu_s) * 1000),
                fmt(median(f.load_ms), 1) if f.load_ms else "-",
            ]
            for rev, f in figures.items()
        ]
        mode = "sources compiled at every start" if opts.no_bytecode else "byte-compiled trees"
        print(f"\nmedians of {opts.runs} alternating starts, {mode}:\n")
        print(
            table(
                [
                    "rev",
                    "python ms",
                    "imports ms",
                    "first 200 ms",
                    "min-max ms",
                    "CPU at first 200 ms",
                    "load ms",
                ],
                rows,
            )
        )

    return run_bench("edgefn-start-", work)


if __name__ == "__main__":
    sys.exit(main())
