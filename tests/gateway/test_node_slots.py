"""Reserved concurrency holds across the processes of one node (`serve --workers N`, or two
gateways on one data_dir), and a process that dies gives its slots back."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import httpx

from gateway.functions.node_slots import NodeSlots
from tests.invocations.conftest import Node, node_factory  # noqa: F401  (a fixture)

ROOT = Path(__file__).resolve().parents[2]

HOLDER = """
import asyncio, sys
from pathlib import Path
from gateway.functions.node_slots import NodeSlots
slots = NodeSlots(Path(sys.argv[1]))
taken = [asyncio.run(slots.acquire("f", 3)) for _ in range(2)]
print(" ".join(str(t) for t in taken), flush=True)
sys.stdin.read()  # hold until killed
"""


def test_slots_are_shared_between_processes_and_freed_when_one_dies(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(tmp_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        assert holder.stdout is not None
        held = holder.stdout.readline().split()
        assert len(held) == 2 and "None" not in held, held
        slots = NodeSlots(tmp_path)
        mine = asyncio.run(slots.acquire("f", 3))
        assert mine is not None and mine not in held
        assert asyncio.run(slots.acquire("f", 3)) is None  # 2 there + 1 here = the limit
        assert asyncio.run(slots.acquire("g", 3)) is not None  # another function counts apart
        holder.kill()
        holder.wait(timeout=10)
        # the kernel dropped the dead process's locks: its two slots are free again
        again = [asyncio.run(slots.acquire("f", 3)) for _ in range(2)]
        assert None not in again and len({*again, mine}) == 3
        assert asyncio.run(slots.acquire("f", 3)) is None
        asyncio.run(slots.release("f", mine))
        assert asyncio.run(slots.acquire("f", 3)) == mine
    finally:
        if holder.poll() is None:
            holder.kill()


FUNCTION = """
[functions.stream]
component = "{stream}"
timeout_s = 60
reserved_concurrency = 2

[[routes]]
name = "stream"
path = "/stream"
function = "stream"
"""


def test_reserved_concurrency_holds_across_two_gateways_on_one_data_dir(
    node_factory: Callable[..., Node],  # noqa: F811  (its nodes share one data_dir)
) -> None:
    url_a, url_b = node_factory(FUNCTION).url, node_factory(FUNCTION).url
    started = threading.Barrier(3, timeout=60)
    statuses: list[int] = []

    def hold() -> None:  # takes a slot on gateway a and keeps it while its body streams
        with httpx.stream("GET", f"{url_a}/stream?n=3&ms=1000", timeout=60) as r:
            statuses.append(r.status_code)
            it = r.iter_bytes()
            next(it)  # the first chunk: the guest runs and holds its slot
            started.wait()
            for _ in it:
                pass

    holders = [threading.Thread(target=hold) for _ in range(2)]
    for t in holders:
        t.start()
    started.wait()
    refused = httpx.get(f"{url_b}/stream?n=1&ms=0", timeout=60)
    for t in holders:
        t.join(timeout=60)
    assert statuses == [200, 200]
    assert refused.status_code == 429, refused.text
    assert refused.json()["error"]["code"] == "throttled"
    # the streams ended and gave their slots back: b serves again
    assert httpx.get(f"{url_b}/stream?n=1&ms=0", timeout=60).status_code == 200
