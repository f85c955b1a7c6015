"""Host-call cost and list<u8> crossings, stock wasmtime-py against edgefn's paths.

    .venv/bin/python -m bench.wasm_calls [--runs 5] [--json]

edgefn's column is what the runtime uses: `wasm_runtime._fastcall` installed (guest exports and
the values they carry) and host functions defined through `wasm_runtime._crossing` (C), written
in canonical values (`harness.CanonicalHost`). `install()` is process-wide and cannot be undone,
so each mode runs in its own child process (`--mode stock` never imports either); the parent
prints one table of medians.

Rows:
- host call, wasm loop: a WAT guest calls the host in a wasm loop, so the figure is the host call
  alone (the crossing, conversions, the Python function).
- host call, Python guest: the componentize-py guest's loop, which adds the guest's own Python.
- list<u8> host -> guest / guest -> host: one crossing of N bytes through a host function
  (`source` result / `sink` argument), measured around a guest export that does only that.
- Python-side lower / lift: `ListType.convert_to_c` / `convert_from_c` alone for N bytes, the part
  of a crossing that Python controls; the rest is wasmtime turning each byte into a `Val`.
- latin-1 string host -> guest / guest -> host: the same N bytes as a `string` in the
  `latin1+utf16` encoding, the way `wasm_runtime._body_adapter` moves bodies (a WAT guest; the host
  decodes or encodes latin-1, as the runtime's host does).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from wasmtime import Engine, Store
from wasmtime import _ffi as ffi
from wasmtime.component import Component, Linker

from tests.wasm_fastcall import harness  # the guest and host the correctness tests pin down

KIB = 1 << 10
MIB = 1 << 20
BYTE_SIZES = (4 * KIB, 64 * KIB, MIB)


def _median_us_per_call(runs: int, calls: int, body: Callable[[], Any]) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        body()
        times.append((time.perf_counter() - start) / calls * 1e6)
    return statistics.median(times)


def _median_ms(runs: int, body: Callable[[], Any]) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        body()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def _linker_factory(mode: str) -> Callable[[Engine, Component], Linker]:
    """How this mode links the fastcall guests' host interface."""
    if mode == "stock":
        host = harness.Host()
        host.record_calls = False

        return lambda engine, component: harness.make_linker_for(engine, host, component)
    from wasm_runtime import _fastcall

    _fastcall.install()
    impls = harness.CanonicalHost(record_calls=False).impls()
    return lambda engine, component: harness.crossing_linker(engine, component, impls)


def _table(mode: str) -> Any:
    """The store's resource table when host calls cross in C; stock wasmtime-py keeps its own."""
    from wasm_runtime import _hostcall

    return None if mode == "stock" else _hostcall.ResourceTable()


def measure(mode: str, runs: int) -> dict[str, float]:
    make_linker = _linker_factory(mode)
    engine = Engine()
    out: dict[str, float] = {}

    wat = Component(engine, harness.WAT_LOOPS)
    loops = harness.Guest(engine, make_linker(engine, wat), wat, _table(mode))
    n = 20_000 if mode == "fast" else 5_000
    loops.call("loop-noop", 100)
    loops.call("loop-add", 100)
    out["host call noop(), wasm loop (us)"] = _median_us_per_call(runs, n, lambda: loops.call("loop-noop", n))
    out["host call add(u32, u32) -> u32, wasm loop (us)"] = _median_us_per_call(
        runs, n, lambda: loops.call("loop-add", n)
    )

    component = harness.load_guest(engine)
    guest = harness.Guest(engine, make_linker(engine, component), component, _table(mode))
    guest.call("loop-noop", 100)
    out["host call noop(), Python guest (us)"] = _median_us_per_call(
        runs, n, lambda: guest.call("loop-noop", n)
    )
    out["host call add(u32, u32) -> u32, Python guest (us)"] = _median_us_per_call(
        runs, n, lambda: guest.call("loop-add", n)
    )
    m = n // 4
    out["host call echo(list<u8>) 64 B, Python guest (us)"] = _median_us_per_call(
        runs, m, lambda: guest.call("loop-echo", m, 64)
    )

    out["host call blob.append(borrow<blob>, list<u8>) 64 B, Python guest (us)"] = _median_us_per_call(
        runs, m, lambda: guest.call("loop-blob", m, 64)
    )

    for size in BYTE_SIZES:
        label = _size_label(size)
        guest.call("pull", size)
        out[f"list<u8> {label} host -> guest (ms)"] = _median_ms(runs, lambda s=size: guest.call("pull", s))
        out[f"list<u8> {label} guest -> host (ms)"] = _median_ms(runs, lambda s=size: guest.call("push", s))

    out.update(_python_side(engine, component, runs))
    out.update(_latin1_strings(engine, runs))
    return out


# A guest that hands N bytes of its memory to the host as a latin-1 string, or takes N back.
WAT_LATIN1 = """
(component
  (import "edgefn:bench/bytes" (instance $h
    (export "push" (func (param "data" string)))
    (export "pull" (func (param "n" u32) (result string)))))
  (core module $mem
    (memory (export "mem") 64)
    (global $top (mut i32) (i32.const 1024))
    (func (export "realloc") (param i32 i32 i32 i32) (result i32) (local $p i32)
      (local.set $p (i32.and (i32.add (global.get $top) (i32.const 7)) (i32.const -8)))
      (global.set $top (i32.const 1024))
      (local.get $p)))
  (core instance $memi (instantiate $mem))
  (alias core export $memi "mem" (core memory $m))
  (alias core export $memi "realloc" (core func $realloc))
  (core func $push (canon lower (func $h "push") (memory $m) string-encoding=latin1+utf16))
  (core func $pull (canon lower (func $h "pull") (memory $m) (realloc $realloc) string-encoding=latin1+utf16))
  (core module $main
    (import "h" "push" (func $push (param i32 i32)))
    (import "h" "pull" (func $pull (param i32 i32)))
    (func (export "push") (param $n i32) (call $push (i32.const 1024) (local.get $n)))
    (func (export "pull") (param $n i32) (call $pull (local.get $n) (i32.const 16))))
  (core instance $hi (export "push" (func $push)) (export "pull" (func $pull)))
  (core instance $i (instantiate $main (with "h" (instance $hi))))
  (func (export "push") (param "n" u32) (canon lift (core func $i "push")))
  (func (export "pull") (param "n" u32) (canon lift (core func $i "pull"))))
"""


def _latin1_strings(engine: Engine, runs: int) -> dict[str, float]:
    block = bytes(range(256)) * (MIB // 256)
    received: list[bytes] = []
    linker = Linker(engine)
    with linker.root() as root, root.add_instance("edgefn:bench/bytes") as inst:
        inst.add_func("push", lambda _store, data: received.append(data.encode("latin-1")))
        inst.add_func("pull", lambda _store, n: block[:n].decode("latin-1"))
    component = Component(engine, WAT_LATIN1)
    store = Store(engine)
    instance = linker.instantiate(store, component)
    push, pull = instance.get_func(store, "push"), instance.get_func(store, "pull")
    out: dict[str, float] = {}

    def call(func: Any, n: int) -> None:
        func(store, n)
        func.post_return(store)

    for size in BYTE_SIZES:
        label = _size_label(size)
        call(pull, size)
        out[f"latin-1 string {label} host -> guest (ms)"] = _median_ms(runs, lambda s=size: call(pull, s))
        out[f"latin-1 string {label} guest -> host (ms)"] = _median_ms(runs, lambda s=size: call(push, s))
    if len(received[-1]) != BYTE_SIZES[-1]:
        raise RuntimeError(f"the host received {len(received[-1])} bytes, not {BYTE_SIZES[-1]}")
    return out


def _python_side(engine: Engine, component: Component, runs: int) -> dict[str, float]:
    """Only the Python conversion of a list<u8>: what `_fastcall` replaces."""
    host_iface = component.type.imports(engine)["edgefn:fastcall/host"].ty
    list_u8 = host_iface.exports(engine)["echo"].ty.params[0][1]  # type: ignore[union-attr]
    store = Store(engine)
    data = harness.pattern(MIB)
    out = {}

    def lower() -> None:
        val = ffi.wasmtime_component_val_t()
        list_u8.convert_to_c(store, data, ctypes.pointer(val))
        ffi.wasmtime_component_val_delete(ctypes.byref(val))

    src = ffi.wasmtime_component_val_t()
    list_u8.convert_to_c(store, data, ctypes.pointer(src))
    copies = []
    for _ in range(runs):
        dst = ffi.wasmtime_component_val_t()
        ffi.wasmtime_component_val_clone(ctypes.byref(src), ctypes.byref(dst))
        copies.append(dst)

    def lift() -> None:
        assert list_u8.convert_from_c(copies.pop()) == data

    out["Python-side lower, 1 MiB (ms)"] = _median_ms(runs, lower)
    out["Python-side lift, 1 MiB (ms)"] = _median_ms(runs, lift)
    ffi.wasmtime_component_val_delete(ctypes.byref(src))
    return out


def _size_label(size: int) -> str:
    return f"{size // MIB} MiB" if size >= MIB else f"{size // KIB} KiB"


def _child(mode: str, runs: int) -> dict[str, float]:
    proc = subprocess.run(
        [sys.executable, "-m", "bench.wasm_calls", "--mode", mode, "--runs", str(runs)],
        capture_output=True,
        text=True,
        check=True,
        cwd=harness.REPO,
        timeout=900,
    )
    result: dict[str, float] = json.loads(proc.stdout)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=5, help="runs per figure; the median is reported")
    parser.add_argument("--mode", choices=["stock", "fast"], help=argparse.SUPPRESS)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    if args.mode:
        print(json.dumps(measure(args.mode, args.runs)))
        return 0
    harness.guest_wasm()  # build once here, not twice in parallel children
    load_before = os.getloadavg()[0]
    stock = _child("stock", args.runs)
    fast = _child("fast", args.runs)
    load_after = os.getloadavg()[0]
    load = f"1-min load average {load_before:.1f} before, {load_after:.1f} after, {os.cpu_count()} cores"

    if args.json:
        print(json.dumps({"stock": stock, "fast": fast, "load": load}, indent=2))
        return 0
    width = max(len(k) for k in stock)
    title = f"figure (median of {args.runs} runs)"
    print(f"| {title:<{width}} | stock wasmtime-py | edgefn | speed-up |")
    print(f"| {'-' * width} | ---: | ---: | ---: |")
    for key, before in stock.items():
        after = fast[key]
        print(f"| {key:<{width}} | {before:,.1f} | {after:,.2f} | {before / after:,.1f}x |")
    print(f"\n{load}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
