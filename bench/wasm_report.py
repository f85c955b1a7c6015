"""Markdown for the `bench.wasm` section of docs/performance.md, from one run's results.

Kept apart from bench/wasm.py (which runs things) so that the wording of targets and reasons can
change without touching how figures are taken. The reasons printed next to each missed target
are the measured causes found while building the runtime; the figures in them come from the run.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from bench.harness import fmt, median, ratio, table
from bench.wasm_peers import FUNCTION_TIMEOUT_S
from wasm_runtime.runtime import Runtime

if TYPE_CHECKING:
    from bench.wasm import HelloSample, Options, Results, System

Cmd = Callable[[Sequence[str]], str]

WASM_CALLS_DOC = "performance-wasm-calls.md"


def _med(samples: Sequence[HelloSample], attr: str) -> float:
    return median([getattr(s.wrk, attr) for s in samples])


def _cpu_ms(samples: Sequence[HelloSample]) -> float:
    """CPU of the whole process tree a request (ms), the median over passes: what a system spends
    on a request, and so where a req/s ratio comes from (at one connection req/s is about 1/CPU)."""
    per = [s.cpu_pct * 10 / s.wrk.req_per_s for s in samples if s.wrk.req_per_s > 0]
    return median(per) if per else float("nan")


def _pct(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


PROVISIONED = 64  # instances `hello-reuse` keeps made ahead (bench.wasm's config); one per connection


def _threads() -> int:
    return int(inspect.signature(Runtime.__init__).parameters["max_threads"].default)


def render(
    systems: Sequence[System],
    results: Results,
    opts: Options,
    machine: dict[str, str],
    command: str,
    cmd: Cmd,
) -> str:
    out = ["## wasm functions: edgefn against `wasmtime serve` and workerd", ""]
    out += _machine(results, machine)
    out += _commands(systems, results, opts, command, cmd)
    out += _hello(results, opts)
    out += _streams(results, opts)
    out += _restarts(results, opts)
    out += _memory(systems, results, opts)
    out += ["### Targets (issue #6)", "", *verdicts(results, opts), ""]
    out += _reading(results, opts)
    return "\n".join(out)


def _machine(results: Results, machine: dict[str, str]) -> list[str]:
    info = dict(machine)
    info.update(results.versions)
    if results.load_during:
        info["load average after each hello pass"] = "; ".join(results.load_during)
    rows = [[k, v] for k, v in info.items() if k not in ("nginx",)]
    return ["### Machine", "", table(["", ""], rows), ""]


def _commands(
    systems: Sequence[System], results: Results, opts: Options, command: str, cmd: Cmd
) -> list[str]:
    from bench.wasm import HELD_PATH, SMALL_PATH, STREAM_PATH

    out = [
        "### Commands",
        "",
        "```sh",
        "make examples   # builds examples/hello/hello.wasm and examples/stream/stream.wasm",
        command,
        "```",
        "",
        f"{opts.passes} passes; in each, every target in turn (after a 1 s warm-up of each). The "
        "load generators (wrk with one thread, the asyncio client) share the 2 cores with the system "
        "under test and with whatever else runs on the machine (see the load averages above). "
        "Systems, as started (first 200 after start in brackets):",
        "",
    ]
    for s in systems:
        out.append(f"- `{s.name}` ({s.start_s * 1000:,.0f} ms): `{cmd(s.argv)}`")
    out += [
        "",
        f"- hello: `wrk -t1 -c1|-c64 -d{opts.duration_s:g}s --latency -s done.lua URL`; URL is "
        "`/hello` (edgefn: `/hello-reuse` for the `instance_reuse = 1000` function).",
        f"- stream: `python -m bench.wasm_client fetch URL{STREAM_PATH} --runs {opts.stream_runs} "
        f"--expect-bytes 20971520` (20 chunks of 1 MiB, each flushed), and "
        f"`... fetch URL{SMALL_PATH} --runs {opts.ttfb_runs}` (one 16-byte chunk) for the time to "
        "first byte: from the request written to the first *body* byte, every byte checked.",
        f"- held: `python -m bench.wasm_client hold URL{HELD_PATH} --connections {opts.held} "
        f"--hold-s {opts.hold_s:g}`: {opts.held} GETs opened at once on the stream function, each "
        "answered with a 16-byte chunk a second (the slowness is the function's, the client reads "
        "what arrives), closed after the hold.",
        "",
    ]
    for note in results.peer_notes:
        out += [f"**{note}**", ""]
    return out


def _hello(results: Results, opts: Options) -> list[str]:
    labels = list(dict.fromkeys(label for (_, label) in results.hello))
    rows = []
    for label in labels:
        c1 = results.hello.get(("c1", label), [])
        c64 = results.hello.get(("c64", label), [])
        rows.append(
            [
                f"`{label}`",
                fmt(_med(c1, "req_per_s")),
                fmt(_med(c1, "p50_ms"), 2),
                fmt(_med(c1, "p99_ms"), 2),
                fmt(_med(c64, "req_per_s")),
                fmt(_med(c64, "p50_ms"), 1),
                fmt(_med(c64, "p99_ms"), 1),
                fmt(median([s.cpu_pct for s in c64])),
                fmt(_cpu_ms(c1), 3),
                fmt(_cpu_ms(c64), 3),
                fmt(max((s.rss_peak_mb for s in c64), default=float("nan"))),
                str(sum(s.wrk.errors for s in c1 + c64)),
                ", ".join(fmt(s.wrk.req_per_s) for s in c64),
            ]
        )
    headers = [
        "target",
        "c1 req/s",
        "c1 p50 ms",
        "c1 p99 ms",
        "c64 req/s",
        "c64 p50 ms",
        "c64 p99 ms",
        "c64 CPU %",
        "c1 CPU ms/req",
        "c64 CPU ms/req",
        "c64 peak RSS MiB",
        "errors",
        "c64 req/s per pass",
    ]
    out = [
        "### hello (tiny JSON echo), 1 and 64 connections",
        "",
        "Medians of the passes. `fresh`: a new instance per request (edgefn's default and `wasmtime "
        "serve`'s); `reuse`: one instance serves up to 1000 requests (edgefn `instance_reuse = 1000`, "
        "`wasmtime serve --max-instance-reuse-count 1000`). CPU % is of one core, for the whole "
        "process tree; CPU ms/req is that CPU divided by the requests answered (median of the "
        "passes). `wasmtime serve --help` (49) offers, for reuse: `--max-instance-reuse-count` "
        "(default 1 for WASIp2 components, 128 for WASIp3), `--max-instance-concurrent-reuse-count` "
        "(no effect on WASIp2 components, which cannot be called concurrently) and "
        "`--idle-instance-timeout` (default 1 s); no `-S` option is about reuse. The row `edgefn-w1 no "
        "function` is a redirect route: the gateway alone, the floor under every function.",
        "",
        table(headers, rows),
        "",
    ]
    ratio_rows = []
    for label in labels:
        if not _is_function(label):
            continue
        for peer in _peers_of(label):
            if ("c1", peer) not in results.hello and ("c64", peer) not in results.hello:
                continue
            cells = [f"`{label}`", f"`{peer}`"]
            for conns in ("c1", "c64"):
                cells.append(fmt(_hello_ratio(results, conns, label, peer), 2))
            cells.append(fmt(_hello_ratio(results, "c64", label, "workerd"), 3))
            ratio_rows.append(cells)
    out += [
        "Ratios of req/s (edgefn / peer, medians of this run). The `timed` peers are `wasmtime "
        f"serve -W timeout={FUNCTION_TIMEOUT_S:g}s` on the same component compiled with epoch "
        "checks: the time limit edgefn puts on every function that names none (`timeout_s`), "
        "enforced the same way (epoch interruption: a check at each function entry and loop "
        "back-edge of the guest's code). `wasmtime serve` without `-W timeout` lets a guest run "
        "for ever; the targets are judged against it, as the issue names it.",
        "",
        table(["edgefn", "against", "c1", "c64", "c64 against workerd"], ratio_rows),
        "",
    ]
    return out + _breakdown(results)


def _peers_of(label: str) -> tuple[str, str]:
    """The `wasmtime serve` rows an edgefn hello row (or its kind, "fresh" or "reuse") is set
    against: as the issue names it, and with edgefn's time limit."""
    kind = "reuse" if label.endswith("reuse") else "fresh"
    return f"wasmtime {kind}", f"wasmtime {kind} timed"


def _hello_ratio(results: Results, conns: str, label: str, peer: str) -> float:
    return ratio(
        _med(results.hello.get((conns, label), []), "req_per_s"),
        _med(results.hello.get((conns, peer), []), "req_per_s"),
    )


def _is_function(label: str) -> bool:
    """An edgefn hello target (not the gateway-only route measured beside them)."""
    return label.startswith("edgefn") and label.endswith(("fresh", "reuse"))


def _breakdown(results: Results) -> list[str]:
    """Where one hello request's time goes in edgefn, at one connection (medians, ms)."""
    if not results.inproc or ("c1", "edgefn-w1 reuse") not in results.hello:
        return []

    def p50(label: str) -> float:
        return _med(results.hello.get(("c1", label), []), "p50_ms")

    def inproc(key: str) -> float:
        return median([r[key] for r in results.inproc if key in r])

    floor, reuse, fresh = p50("edgefn-w1 no function"), p50("edgefn-w1 reuse"), p50("edgefn-w1 fresh")
    rows = [
        ["gateway alone: a redirect route on `edgefn-w1`, over HTTP", fmt(floor, 2), fmt(floor, 2)],
        [
            "`Runtime.invoke` alone, in-process (`bench.wasm_inproc`)",
            fmt(inproc("reuse_ms"), 2),
            fmt(inproc("fresh_ms"), 2),
        ],
        [
            "... of which instantiation on the request path (0 when the instance was made ahead of need)",
            "0",
            fmt(inproc("instantiate_ms"), 2),
        ],
        [
            "the rest: the gateway's function path, HTTP body framing (a fresh instance's run: its "
            "hand-offs to and from a guest thread) "
            "(the difference of two medians measured apart: it can come out slightly negative)",
            fmt(reuse - floor - inproc("reuse_ms"), 2),
            fmt(fresh - floor - inproc("fresh_ms"), 2),
        ],
        ["**hello through `edgefn-w1`, over HTTP**", fmt(reuse, 2), fmt(fresh, 2)],
        [
            "hello through `wasmtime serve`, over HTTP",
            fmt(p50("wasmtime reuse"), 2),
            fmt(p50("wasmtime fresh"), 2),
        ],
    ]
    return [
        "Where a hello request's time goes in edgefn (p50 at one connection, ms; the in-process "
        f"figures are medians of {len(results.inproc)} runs of 100 sequential invocations, one per pass):",
        "",
        table(["part", "reused instance", "fresh instance"], rows),
        "",
    ]


def _streams(results: Results, opts: Options) -> list[str]:
    rows = []
    wasmtime = median(results.stream["wasmtime"].mib_s) if "wasmtime" in results.stream else float("nan")
    for label, s in results.stream.items():
        rows.append(
            [
                f"`{label}`",
                fmt(median(s.mib_s), 1),
                fmt(ratio(median(s.mib_s), wasmtime), 3),
                fmt(median(s.ttfb_20mb_ms), 1),
                fmt(median(s.ttfb_small_ms), 2),
                fmt(_pct(s.ttfb_small_ms, 0.9), 2),
                ", ".join(fmt(x, 1) for x in s.mib_s),
            ]
        )
    return [
        "### A guest streaming 20 MB; time to first byte",
        "",
        f"{opts.stream_runs} downloads of 20 MiB and {opts.ttfb_runs} of a 16-byte stream per target and "
        "pass, one at a time; medians over all passes.",
        "",
        table(
            [
                "system",
                "20 MB MiB/s",
                "/ wasmtime",
                "TTFB 20 MB ms",
                "TTFB 16 B ms (median)",
                "TTFB 16 B ms (p90)",
                "MiB/s per download",
            ],
            rows,
        ),
        "",
    ]


def _restarts(results: Results, opts: Options) -> list[str]:
    rows = []
    for r in results.restarts:
        rows.append(
            [
                r.label,
                fmt(r.cold_s, 2),
                fmt(median(r.warm_s) * 1000),
                f"{fmt(min(r.warm_s) * 1000)}-{fmt(max(r.warm_s) * 1000)}" if r.warm_s else "-",
                fmt(median(r.load_ms), 1) if r.load_ms else "-",
                fmt(r.compile_s, 1),
            ]
        )
    out = [
        "### Restart to first response",
        "",
        "From spawning the process to the first 200 from the function, polled every 2 ms. Cold: "
        "edgefn with an empty `data_dir/compiled/`, `wasmtime serve` on the `.wasm` with `-C cache=n` "
        f"(both compile at start). Warm: median of {opts.restarts} starts, edgefn from its compile cache, "
        "`wasmtime serve --allow-precompiled` on a `wasmtime compile` output. The edgefn config has "
        "the one function; the log's `loaded hello ... from cache in N ms` gives the component's own "
        "share. edgefn's packages are byte-compiled first (`python -m compileall`), as `pip install` "
        "leaves an installed node (the container image). The `--workers 2` row is a worker killed "
        "(SIGKILL) in a running node, from the kill to its replacement's `Application startup complete` "
        "in the log (a first 200 could come from the other worker), median of as many kills; its "
        "replacement is forked from the node process, which has done the imports.",
        "",
        table(
            [
                "system",
                "cold: first 200 s",
                "warm: first 200 ms (median)",
                "warm min-max ms",
                "component load ms (log)",
                "compile s (log)",
            ],
            rows,
        ),
        "",
    ]
    for r in results.restarts:
        out.append(f"- {r.label}: `{r.command}`")
    return [*out, ""]


def _memory(systems: Sequence[System], results: Results, opts: Options) -> list[str]:
    rows = []
    for s in systems:
        rss, pss = results.idle.get(s.name, (float("nan"), float("nan")))
        hello = [
            x
            for (conns, label), samples in results.hello.items()
            if conns == "c64" and _system_of(label) == s.name
            for x in samples
        ]
        held = next((h for h in results.held if _system_of(h.label) == s.name), None)
        cells = [
            f"`{s.name}`",
            fmt(rss),
            fmt(pss),
            fmt(max((x.rss_peak_mb for x in hello), default=float("nan"))),
            fmt(max((x.pss_peak_mb for x in hello), default=float("nan"))),
        ]
        if held is None:
            cells += ["-"] * 4
        else:
            c = held.client
            cells += [
                f"{c.get('answered', '-')} / {c.get('with_body', '-')} / {c.get('error_count', '-')}",
                f"{fmt(held.rss_before_mb)} -> {fmt(held.rss_peak_mb)}",
                fmt(held.pss_peak_mb),
                held.note or "",
            ]
        rows.append(cells)
    return [
        "### Memory (RSS summed over the process tree)",
        "",
        "Idle: after start and one response of each function. hello-c64: the peak sampled every "
        f"0.25 s during the 64-connection runs. Held: {opts.held} slow streams from the stream "
        f"function, opened at once and held {opts.hold_s:g} s, peak sampled every 0.2 s. RSS counts "
        "shared pages once per process (edgefn `--workers 2` is 3 processes); PSS splits them.",
        "",
        table(
            [
                "system",
                "idle RSS MiB",
                "idle PSS MiB",
                "hello-c64 peak RSS MiB",
                "hello-c64 peak PSS MiB",
                f"held: answered / got body / errors (of {opts.held})",
                "held RSS MiB before -> peak",
                "held peak PSS MiB",
                "note",
            ],
            rows,
        ),
        "",
    ]


def _system_of(label: str) -> str:
    if label.startswith("edgefn"):
        return label.split()[0]
    if label == "wasmtime":
        return "wasmtime-stream"
    if label.startswith("wasmtime "):
        return label.replace(" ", "-")
    return label


# --- verdicts ------------------------------------------------------------------------------------


def _verdict(ok: bool) -> str:
    return "**meets**" if ok else "**MISSES**"


def verdicts(results: Results, opts: Options) -> list[str]:
    lines = []
    hello = results.hello
    for label in dict.fromkeys(label for (_, label) in hello):
        if not _is_function(label):
            continue
        goal = 0.5 if label.endswith("reuse") else 1.0
        peer, timed = _peers_of(label)
        if ("c64", peer) not in hello:
            continue
        for conns in ("c1", "c64"):
            r = _hello_ratio(results, conns, label, peer)
            line = (
                f"- hello {conns}, `{label}` / `{peer}` = {fmt(r, 2)}x (target >= {goal:g}x): "
                f"{_verdict(r >= goal)}"
            )
            if (conns, timed) in hello:
                same_limit = _hello_ratio(results, conns, label, timed)
                line += f" (against `{timed}`, the same time limit: {fmt(same_limit, 2)}x)"
            lines.append(line)
    if "wasmtime" in results.stream:
        peer_mib = median(results.stream["wasmtime"].mib_s)
        for label, s in results.stream.items():
            if label.startswith("edgefn"):
                r = ratio(median(s.mib_s), peer_mib)
                lines.append(
                    f"- 20 MB stream, `{label}` {fmt(median(s.mib_s), 1)} MiB/s = {fmt(r, 3)}x `wasmtime "
                    f"serve` (target >= 0.5x): {_verdict(r >= 0.5)}"
                )
    for label, s in results.stream.items():
        if label.startswith("edgefn"):
            t = median(s.ttfb_small_ms)
            lines.append(
                f"- TTFB of a streamed function, `{label}`: {fmt(t, 2)} ms from request to first body "
                f"byte, instantiation included (target <= 10 ms after the guest's first write): "
                f"{_verdict(t <= 10)}"
            )
    for r in results.restarts:
        if not (r.label.startswith("edgefn") and r.warm_s):
            continue
        warm = median(r.warm_s) * 1000
        if r.worker:
            lines.append(
                f"- restart of a killed worker from the cache (`--workers 2`), one function: {fmt(warm)} ms "
                "from the kill to its replacement ready (target <= 100 ms per function): "
                f"{_verdict(warm <= 100)}"
            )
        else:
            load = median(r.load_ms) if r.load_ms else float("nan")
            lines.append(
                f"- restart to first response from the cache, one function: {fmt(warm)} ms whole process "
                f"(target <= 100 ms per function): {_verdict(warm <= 100)}; the function's own load "
                f"(deserialize, from the log; see below) {fmt(load, 1)} ms: {_verdict(load <= 100)}"
            )
    for h in results.held:
        if h.label.startswith("edgefn"):
            served = h.client.get("with_body", 0)
            ok = h.rss_peak_mb <= 500 and served == opts.held
            lines.append(
                f"- {opts.held} held streams, `{h.label}`: peak RSS {fmt(h.rss_peak_mb)} MiB "
                f"(PSS {fmt(h.pss_peak_mb)} MiB), "
                f"{served} of {opts.held} streams served (target: all, in <= 500 MB): {_verdict(ok)}"
            )
    return lines


def _time_limit(results: Results) -> list[str]:
    """What the time limit costs, read from the `timed` rows (none when they did not run)."""
    cost = []
    for kind in ("fresh", "reuse"):
        plain, timed = (results.hello.get(("c1", peer), []) for peer in _peers_of(kind))
        if plain and timed:
            a, b = _med(timed, "req_per_s"), _med(plain, "req_per_s")
            cost.append(f"{fmt(a)} against {fmt(b)} req/s {kind} ({fmt(ratio(a, b), 2)}x)")
    if not cost:
        return []
    return [
        f"- **the time limit**: `wasmtime serve -W timeout={FUNCTION_TIMEOUT_S:g}s` at one connection: "
        f"{'; '.join(cost)}. Epoch interruption puts a check at each function entry and loop back-edge "
        "of the guest's code, and a componentize-py guest is CPython's interpreter loop, so it checks "
        "at nearly every bytecode. edgefn keeps the checks on for every function: a reused guest runs "
        "on the event loop's thread, and one that loops without a host call would otherwise hold the "
        "worker for good; `wasmtime serve` by default has no limit at all."
    ]


def _reading(results: Results, opts: Options) -> list[str]:
    threads = _threads()

    def inproc(key: str) -> str:
        return fmt(median([r[key] for r in results.inproc if key in r]), 2)

    def p50(label: str) -> str:
        return fmt(_med(results.hello.get(("c1", label), []), "p50_ms"), 2)

    edge_mib = median(
        [x for label, s in results.stream.items() if label.startswith("edgefn") for x in s.mib_s]
    )
    return [
        "### Why, target by target",
        "",
        f"- **hello, fresh instance**: `Runtime.invoke` alone needs {inproc('fresh_ms')} ms for a fresh "
        f"instance ({inproc('instantiate_ms')} ms of it instantiating on the request path; the rest is "
        "the guest's first `handle`: its own first run, page faults and lazily filled tables, which "
        "`wasmtime serve` pays too, and 48 host calls), where `wasmtime serve` answers the whole HTTP "
        f"request in {p50('wasmtime fresh')} ms (p50, one connection). Since December 2026 fresh "
        "instances are made in a few instance slots (`[node] instance_slots`, wasm_runtime/_slots.py), "
        "where memory stays mapped between instances as in `wasmtime serve`'s pooling allocator, "
        "rather than with mappings of their own faulted in and unmapped each time. Host calls cross in C "
        "(wasm_runtime/_hostcall.c) since December 2026 but their bodies are Python, which holds the "
        "GIL: one guest executes at a time per process, and `--workers N` uses the cores, where "
        "`wasmtime serve` uses both for wasm and host alike.",
        f"- **hello, instance reuse**: a warm instance costs `Runtime.invoke` {inproc('reuse_ms')} ms "
        f"plus the gateway around it (table above), against {p50('wasmtime reuse')} "
        "ms for the whole request in `wasmtime serve`. The bench's `hello-reuse` has `provisioned = "
        f"{PROVISIONED}`, and the warm pool keeps as many idle instances as were in flight recently "
        "(wasm_runtime/_pool.py), so at 64 connections requests find a warm instance, and a request "
        "without a body runs on the event loop's own thread (no hand-off to a guest thread); what is "
        "left is the guest's wasm (about 0.3-0.4 ms, with the headers the gateway forwards to it), its "
        "39 host calls (each through wasmtime's dynamic host-function path and `_hostcall.c` to a "
        "Python body), and the gateway's own Python per request; the export call itself crosses in C "
        "since December 2026 (`_hostcall.Export`).",
        *_time_limit(results),
        f"- **20 MB stream**: edgefn moved {fmt(edge_mib, 1)} MiB/s. The guest's bytes reach the host "
        "through the byte adapter (wasm_runtime/_body_adapter.py, see "
        f"[performance-wasm-calls.md]({WASM_CALLS_DOC})): a small component composed around the guest "
        "when it is compiled takes each `list<u8>` by wasmtime's own copy and hands it on as one "
        "latin-1 string, where wasmtime 49's C API would build a 32-byte value per byte (16-18 MiB/s "
        "before December 2026). What is left per MiB is wasmtime's latin-1 to UTF-8 and the crossing's "
        "UTF-8 back to bytes (one pass in C, a word at a time through runs of either kind of byte "
        "since December 2026), the copies between them and the Python of 20 writes; "
        "`wasmtime serve` copies the bytes once.",
        "- **TTFB**: the 16-byte figure runs from the request to the first body byte and so includes "
        "instantiation and the guest's start, which makes it an upper bound of the target's \"after the "
        "guest's first write\". The 20 MB figure waits for a whole 1 MiB first chunk to cross.",
        "- **restart**: the whole process start is in the first figure, and the Python interpreter "
        "with edgefn's imports alone (the row below it) takes most of it: httpx, wasmtime, uvicorn, "
        "starlette and asyncio, which serving needs; subsystems only some configs use (PyJWT, "
        "redis-py, croniter, maxminddb, httpx's TLS transport) are imported when a config uses them "
        "(`python -m bench.start` compares commits). Each added function costs the sha256 of its "
        "file (the compile cache's key, hashed in pieces), the deserialize (the log's figure) and "
        "its linker, made from the import plan kept beside the artifact and shared by components "
        "with the same imports (the hand-written sections below have the figures), which meets the "
        "target. The process figure cannot reach 100 ms while the imports alone take "
        "longer. A killed worker of a running node (`--workers 2` row) pays none of them: it is "
        "forked from the node process, which imported what a worker runs "
        "(gateway/worker_preload.py), and loads the components the node hashed before it forked, "
        "so what is left is its function's deserialize and linker and the listener's start.",
        f"- **held streams**: each running guest holds one of the runtime's {threads} guest threads "
        "(`[node] wasm_threads`) for as long as it streams, and one function at most seven eighths of "
        f"them, so only that many of the {opts.held} streams start per process; the others wait within "
        "their timeout, then get 429 with Retry-After (before December 2026 they got no answer). A live "
        "componentize-py instance dirties several MiB of its own (CPython's heap: compare PSS before "
        "and at the peak), and RSS also counts, once per live instance, the copy-on-write mapping of "
        "the compiled component's memory image, shared with every other instance: PSS is the memory "
        "actually used. `wasmtime serve` stops at its pooling allocator's limit of 1,000 core "
        "instances (about 70 instances of this component) and answers 500 to the rest; with "
        "`-O pooling-allocator=n` it served all 1,000 at about 7.9 GB RSS (measured by hand, "
        "December 2026). 1,000 live Python guests do not fit in 500 MB in either host; light guests "
        "or proxied streams are what that target can mean here, and bench.held_streams measures both "
        "(its section below: 1,000 streams of a WAT guest in edgefn, `wasm_threads` raised).",
        "",
    ]
