from __future__ import annotations

import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from examples import origin as origin_module
from gateway.app import Gateway
from routes import load_config
from tests.servers import ServerThread


@pytest.fixture(scope="session")
def origin() -> Iterator[str]:
    with ServerThread(origin_module.app) as server:
        yield server.url


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[Callable[..., str]]:
    """Start a real gateway for a config text; `{data_dir}` is filled in. Returns its base URL."""
    started: list[ServerThread] = []

    def start(toml: str, env: dict[str, str] | None = None) -> str:
        path = tmp_path / f"edgefn-{len(started)}.toml"
        path.write_text(textwrap.dedent(toml).replace("{data_dir}", str(tmp_path / "data")))
        server = ServerThread(Gateway(load_config(path), env=env)).start()
        started.append(server)
        return server.url

    yield start
    for server in started:
        server.stop()
