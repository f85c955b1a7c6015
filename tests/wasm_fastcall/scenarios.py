"""The scenario matrix run with and without `_fastcall.install()`; `python -m` runs the slow baseline.

The baseline runs in its own process because `install()` is process-wide and has no undo: the
test process installs, a child process that never imports `_fastcall` records what stock
wasmtime-py answers, and the two are compared byte for byte.
"""

from __future__ import annotations

import argparse
import pickle
import sys
from typing import Any

from wasmtime import Engine

from tests.wasm_fastcall import harness

OPS = (
    "echo", "sink", "source", "add", "try", "try-fail", "maybe", "reshape", "retag", "pair",
    "words", "strings", "nested", "blob", "consume", "noop",
)
SMALL_SIZES = (0, 1, 7, 4096)
MIB = 1 << 20
# A 1 MiB crossing costs ~2 s each way on the stock path, so the baseline runs only the ops that
# cover all four directions (export param and result, host param and result) at that size.
LARGE_OPS = ("echo", "pair")


def matrix() -> list[tuple[str, int]]:
    cases = [(op, size) for op in OPS for size in SMALL_SIZES]
    cases += [(op, MIB) for op in LARGE_OPS]
    return cases


def run_matrix() -> dict[str, Any]:
    """Every scenario's answer, what the host received, and the export round trips, in order."""
    engine = Engine()
    component = harness.load_guest(engine)
    host = harness.Host()
    guest = harness.Guest(engine, harness.make_linker(engine, host), component)
    answers = {}
    for op, size in matrix():
        answers[f"{op}/{size}"] = guest.run(op, harness.pattern(size), size)
    identity = {size: guest.call("identity", harness.pattern(size)) for size in (*SMALL_SIZES, MIB)}
    return {"answers": answers, "received": host.received, "identity": identity, "blobs_left": host.blobs}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    if "wasm_runtime._fastcall" in sys.modules:
        raise SystemExit("the baseline must run on stock wasmtime-py")
    with open(args.out, "wb") as f:
        pickle.dump(run_matrix(), f)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
