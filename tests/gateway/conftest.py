from __future__ import annotations

import os
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


# Compiled components are keyed by wasm sha256, wasmtime version and engine settings, so every
# test's data_dir can share one directory of them: a component compiles once per machine, not
# once per test (a compile takes 5-20 s on two busy cores).
COMPILED = Path(os.environ.get("EDGEFN_TEST_COMPILED", Path.home() / ".cache" / "edgefn" / "compiled"))


def shared_data_dir(data_dir: Path) -> Path:
    data_dir.mkdir(parents=True, exist_ok=True)
    COMPILED.mkdir(parents=True, exist_ok=True)
    link = data_dir / "compiled"
    if not link.exists():
        link.symlink_to(COMPILED, target_is_directory=True)
    return data_dir


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[Callable[..., str]]:
    """Start a real gateway for a config text; `{data_dir}` is filled in. Returns its base URL."""
    started: list[ServerThread] = []
    shared_data_dir(tmp_path / "data")

    def start(toml: str, env: dict[str, str] | None = None) -> str:
        path = tmp_path / f"edgefn-{len(started)}.toml"
        path.write_text(textwrap.dedent(toml).replace("{data_dir}", str(tmp_path / "data")))
        server = ServerThread(
            Gateway(load_config(path), env=env), date_header=False, server_header=False
        ).start()
        started.append(server)
        return server.url

    yield start
    for server in started:
        server.stop()
