"""A registry over a real SQLite store in a temporary directory, and fake code files.

The registry does not look inside code (the admin API validates components before `deploy`), so
the rules are tested with small files whose bytes differ. The admin API tests use real components
and a real gateway with its admin app (`admin_node`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.admin.app import admin_app
from gateway.app import Gateway
from gateway.functions.registry import Registry
from gateway.functions.registry_sqlite import SqliteStore
from routes import load_config
from tests.gateway.conftest import shared_data_dir
from tests.servers import ServerThread, free_port


class Clock:
    """A clock the test moves, so `created` and `last_modified` are predictable."""

    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


@pytest.fixture
def code(tmp_path: Path) -> Callable[[str], Path]:
    """`code("v1")` is a file whose bytes (and so sha256) are set by the text."""
    directory = tmp_path / "code"
    directory.mkdir()

    def make(text: str) -> Path:
        path = directory / f"{text}.wasm"
        path.write_bytes(b"\0asm-fake:" + text.encode())
        return path

    return make


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Registry]:
    reg = Registry(SqliteStore(tmp_path / "data"), url_domain="fn.test", url_port=8080, clock=Clock())
    yield reg
    reg.close()


TOKEN = "registry-t0ken"


class AdminNode:
    """A gateway and its admin app, real servers on loopback, restartable on the same data_dir."""

    def __init__(self, directory: Path, toml: str) -> None:
        self.directory = directory
        self.port = free_port()
        data_dir = shared_data_dir(directory / "data")
        self.config = directory / "edgefn.toml"
        self.config.write_text(
            f'[node]\nlisten = "127.0.0.1:{self.port}"\ndata_dir = "{data_dir}"\nurl_domain = "fn.test"\n\n'
            + toml
        )
        self.servers: list[ServerThread] = []
        self.gateway: Gateway | None = None
        self.admin = ""

    def start(self) -> AdminNode:
        self.gateway = Gateway(load_config(self.config))
        public = ServerThread(self.gateway, port=self.port).start()
        admin = ServerThread(admin_app(self.gateway), lifespan="off").start()
        self.servers = [public, admin]
        self.admin = admin.url
        return self

    def stop(self) -> None:
        for server in reversed(self.servers):
            server.stop()
        self.servers = []

    def restart(self) -> AdminNode:
        self.stop()
        return self.start()

    def call(self, method: str, path: str, token: str | None = TOKEN, **kwargs: Any) -> httpx.Response:
        headers = {"authorization": f"Bearer {token}"} if token is not None else {}
        headers.update(kwargs.pop("headers", {}))
        return httpx.request(method, self.admin + path, headers=headers, timeout=120, **kwargs)

    def ok(self, method: str, path: str, status: int = 200, **kwargs: Any) -> Any:
        r = self.call(method, path, **kwargs)
        assert r.status_code == status, f"{method} {path}: {r.status_code} {r.text}"
        return r.json() if r.content else None


@pytest.fixture
def admin_node(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str], AdminNode]]:
    """`admin_node(toml)` starts a node whose config is `toml` after a [node] table."""
    monkeypatch.setenv("EDGEFN_ADMIN_TOKEN", TOKEN)
    nodes: list[AdminNode] = []

    def make(toml: str = "") -> AdminNode:
        node = AdminNode(tmp_path / f"node-{len(nodes)}", toml)
        nodes.append(node)
        return node.start()

    yield make
    for node in nodes:
        node.stop()
