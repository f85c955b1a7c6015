"""Reserved concurrency holds across the processes of one node (`serve --workers N`, or two
gateways on one data_dir), and a process that dies gives its slots back."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from gateway.functions.node_slots import NodeSlots
from tests.gateway.conftest import shared_data_dir
from tests.servers import free_port

EDGEFN = [sys.executable, "-m", "gateway.cli"]
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


CONFIG = """
[node]
name = "{name}"
listen = "127.0.0.1:{port}"
admin_listen = "127.0.0.1:{admin}"
data_dir = "{data_dir}"

[functions.stream]
component = "{stream}"
timeout_s = 60
reserved_concurrency = 2

[[routes]]
name = "stream"
path = "/stream"
function = "stream"
"""


def _serve(tmp_path: Path, name: str, data_dir: Path, stream: Path) -> tuple[subprocess.Popen[str], str]:
    port, admin = free_port(), free_port()
    config = tmp_path / f"{name}.toml"
    config.write_text(CONFIG.format(name=name, port=port, admin=admin, data_dir=data_dir, stream=stream))
    proc = subprocess.Popen(
        [*EDGEFN, "serve", "--config", str(config), "--log-level", "WARNING"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{admin}/healthz", timeout=5).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"edgefn serve {name} did not start: {proc.communicate()[1][-2000:]}")
        time.sleep(0.1)


def test_reserved_concurrency_holds_across_two_gateways_on_one_data_dir(
    tmp_path: Path, example_components: dict[str, Path]
) -> None:
    data_dir = shared_data_dir(tmp_path / "data")  # compiled components are shared
    a, url_a = _serve(tmp_path, "a", data_dir, example_components["stream"])
    try:
        b, url_b = _serve(tmp_path, "b", data_dir, example_components["stream"])
    except BaseException:
        a.kill()
        raise
    try:
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
    finally:
        for proc in (a, b):
            proc.terminate()
        for proc in (a, b):
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
