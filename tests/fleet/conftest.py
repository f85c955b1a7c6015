"""A real `redis-server` and a fleet of real `edgefn serve` processes sharing it.

`redis_url` starts redis-server (Debian package; `make test` installs it when root) on a free
loopback port in a temporary directory, without persistence, and stops it after the test. Without
redis-server the fleet tests are skipped with the reason.

`fleet(toml, n, workers=1)` starts n nodes: each its own ports and data directory, all with the
same `control_plane`, so what they share they share only through Redis; `workers=2` runs each as
`serve --workers 2`. Each is a `tests.invocations.conftest.Node`: `.kill()` is SIGKILL (of the
node process; its workers then stop on their own, gateway/server.py).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from tests.gateway.conftest import shared_data_dir
from tests.invocations.conftest import TOKEN, ControlledOrigin, Node, assert_no_lost_tasks, controlled_origin
from tests.servers import free_port

__all__ = ["TOKEN", "ControlledOrigin", "Node", "controlled_origin"]

# Short leases, so the tests see a dead node's events and slots come back in seconds.
LEASE_S = 2.0


def redis_server_binary() -> str | None:
    return shutil.which("redis-server") or (
        "/usr/bin/redis-server" if os.path.exists("/usr/bin/redis-server") else None
    )


class RedisServer:
    """redis-server on a fixed loopback port in `workdir`, without persistence: `stop()` loses
    everything, as a crash of an unpersisted Redis would; `start()` again on the same port."""

    def __init__(self, binary: str, workdir: Path) -> None:
        self.binary = binary
        self.workdir = workdir
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> RedisServer:
        log = (self.workdir / "redis.log").open("ab")
        self.proc = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
                "--daemonize",
                "no",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        client = redis.Redis(port=self.port, socket_connect_timeout=1)
        deadline = time.monotonic() + timeout
        try:
            while True:
                try:
                    client.ping()
                    return self
                except redis.ConnectionError:
                    assert self.proc.poll() is None, (self.workdir / "redis.log").read_text()
                    assert time.monotonic() < deadline, f"redis-server did not answer in {timeout} s"
                    time.sleep(0.02)
        finally:
            client.close()

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    binary = redis_server_binary()
    if binary is None:
        reason = "redis-server is not installed (`make test` installs it when run as root)"
        print(f"SKIP: {reason}")
        pytest.skip(reason)
    workdir = tmp_path / "redis"
    workdir.mkdir()
    server = RedisServer(binary, workdir).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    return redis_server.url


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


Fleet = Callable[..., list[Node]]


def start_node(node: Node, workers: int = 1, timeout: float = 180.0) -> Node:
    """Start `node` and wait until every worker is ready: /healthz answers for whichever worker
    accepts, so with workers each one's "gateway ready" line in the shared log is counted."""
    offset = node.log_path.stat().st_size if node.log_path.exists() else 0
    node.start(timeout=timeout, workers=workers)
    deadline = time.monotonic() + timeout
    while node.log_path.read_bytes()[offset:].count(b"gateway ready") < workers:
        assert node.proc is not None and node.proc.poll() is None, node.log()
        assert time.monotonic() < deadline, f"not all {workers} workers started:\n" + node.log()
        time.sleep(0.05)
    return node


@pytest.fixture
def fleet(tmp_path: Path, redis_url: str, example_components: dict[str, Path]) -> Iterator[Fleet]:
    """`fleet(toml, n=2, env=None, workers=1)`: n running nodes; `{hello}`, `{fetch}`... name the
    example components. The nodes are stopped (SIGTERM) at the end, those already killed excepted."""
    nodes: list[Node] = []
    control_plane = f"{redis_url}?lease_s={LEASE_S:g}"

    def start(toml: str, n: int = 2, env: dict[str, str] | None = None, workers: int = 1) -> list[Node]:
        text = toml
        for name, path in example_components.items():
            text = text.replace("{" + name + "}", str(path))
        made = []
        for _ in range(n):
            i = len(nodes)
            port, admin = free_port(), free_port()
            data_dir = shared_data_dir(tmp_path / f"node-{i}")
            header = (
                f'[node]\nname = "node-{i}"\nlisten = "127.0.0.1:{port}"\n'
                f'admin_listen = "127.0.0.1:{admin}"\ndata_dir = "{data_dir}"\n'
                f'control_plane = "{control_plane}"\n'
            )
            config = tmp_path / f"edgefn-{i}.toml"
            config.write_text(header + text)
            node = Node(
                config=config,
                port=port,
                admin_port=admin,
                log_path=tmp_path / f"node-{i}.log",
                env={**os.environ, "EDGEFN_ADMIN_TOKEN": TOKEN, **(env or {})},
            )
            nodes.append(node)
            made.append(node)
        # Start them side by side: each start waits for its /healthz.
        for node in made:
            start_node(node, workers)
        return made

    yield start
    for node in nodes:
        node.stop()
    assert_no_lost_tasks(nodes)
