"""A real `edgefn serve` subprocess and an origin the tests control, for asynchronous invocations.

The origin records every request (path, headers, arrival time) and answers by path: `/fail/...`
with 503 while `fail` is on, `/slow/...` after `delay_s`, anything else at once with 200. The
gateway runs as a child process so a test can kill it with SIGKILL and start it again on the same
data directory; its log goes to a file the test can read.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.gateway.conftest import shared_data_dir
from tests.servers import ServerThread, free_port

EDGEFN = [sys.executable, "-m", "gateway.cli"]
TOKEN = "t0ken-for-tests"


@dataclass
class Hit:
    path: str
    headers: dict[str, str]
    at: float


@dataclass
class ControlledOrigin:
    url: str = ""
    hits: list[Hit] = field(default_factory=list)
    fail: bool = True
    delay_s: float = 0.5
    lock: threading.Lock = field(default_factory=threading.Lock)

    def paths(self, prefix: str = "") -> list[str]:
        with self.lock:
            return [h.path for h in self.hits if h.path.startswith(prefix)]

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            assert time.monotonic() < deadline, f"timed out; origin saw {self.paths()}"
            time.sleep(0.05)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        path = scope["path"]
        headers = {k.decode(): v.decode("latin-1") for k, v in scope["headers"]}
        with self.lock:
            self.hits.append(Hit(path, headers, time.time()))
        status = 200
        if path.startswith("/fail/") and self.fail:
            status = 503
        if path.startswith("/slow/"):
            await asyncio.sleep(self.delay_s)
        await send(
            {"type": "http.response.start", "status": status, "headers": [(b"content-type", b"text/plain")]}
        )
        await send({"type": "http.response.body", "body": f"origin {status} {path}".encode()})


@pytest.fixture
def controlled_origin() -> Iterator[ControlledOrigin]:
    origin = ControlledOrigin()
    with ServerThread(origin) as server:
        origin.url = server.url
        yield origin


@dataclass
class Node:
    """One `edgefn serve` child on fixed ports and a fixed data directory (restartable)."""

    config: Path
    port: int
    admin_port: int
    log_path: Path
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def admin(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    def start(self, timeout: float = 90.0, *, workers: int = 1) -> Node:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [*EDGEFN, "serve", "--config", str(self.config), "--workers", str(workers)],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while True:
            try:
                if httpx.get(f"{self.admin}/healthz", timeout=2).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            assert self.proc.poll() is None, self.log()
            assert time.monotonic() < deadline, "gateway did not start:\n" + self.log()
            time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, as after a crash or an OOM kill."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def lost_tasks(self) -> list[str]:
        """asyncio's reports of background tasks that died of an exception nobody awaited (a
        warm-up, a sweep): failures no client sees, which tests would otherwise pass over."""
        if not self.log_path.exists():
            return []
        lines = self.log().splitlines()
        return [" | ".join(lines[i : i + 2]) for i, line in enumerate(lines) if LOST_TASK in line]

    def admin_get(self, path: str) -> Any:
        r = httpx.get(self.admin + path, headers={"authorization": f"Bearer {TOKEN}"}, timeout=10)
        assert r.status_code == 200, r.text
        return r.json()

    def cli(self, *args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*EDGEFN, *args, "--admin", self.admin],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )


LOST_TASK = "Task exception was never retrieved"


def assert_no_lost_tasks(nodes: list[Node]) -> None:
    """After the nodes stopped: none of them lost a background task to an exception."""
    lost = {node.log_path.name: node.lost_tasks() for node in nodes}
    assert not any(lost.values()), f"a node's background task died: {lost}"


@pytest.fixture
def node_factory(tmp_path: Path, example_components: dict[str, Path]) -> Iterator[Callable[..., Node]]:
    """Write a config (`{data_dir}`, `{fetch}`, `{hello}`, `{stream}` filled in) and start a node."""
    nodes: list[Node] = []
    data_dir = shared_data_dir(tmp_path / "data")

    def make(toml: str, env: dict[str, str] | None = None, start: bool = True) -> Node:
        port, admin = free_port(), free_port()
        text = toml.replace("{data_dir}", str(data_dir))
        for name, path in example_components.items():
            text = text.replace("{" + name + "}", str(path))
        header = f'[node]\nlisten = "127.0.0.1:{port}"\nadmin_listen = "127.0.0.1:{admin}"\ndata_dir = "{data_dir}"\n'
        config = tmp_path / f"edgefn-{len(nodes)}.toml"
        config.write_text(header + text)
        node = Node(
            config=config,
            port=port,
            admin_port=admin,
            log_path=tmp_path / f"gateway-{len(nodes)}.log",
            env={**os.environ, "EDGEFN_ADMIN_TOKEN": TOKEN, **(env or {})},
        )
        nodes.append(node)
        return node.start() if start else node

    yield make
    for node in nodes:
        node.stop()
    assert_no_lost_tasks(nodes)
