"""A real `edgefn serve` child and the real `edgefn` CLI, for the function lifecycle end to end.

The node is the restartable subprocess of tests/invocations (kill -9 is a real SIGKILL); every
lifecycle step goes through the installed `edgefn` entry point as a user would type it. Version 1
and version 2 are the `hello` example with a different `WHO` env value, so the body says which
version answered as well as the `x-edgefn-executed-version` header.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.invocations.conftest import TOKEN, Node, node_factory  # noqa: F401 - a fixture

EDGEFN = str(Path(sys.executable).parent / "edgefn")


@dataclass
class Cli:
    """`edgefn ...` against one node's admin API."""

    node: Node

    def __call__(
        self, *args: str, ok: bool = True, stdin: str | None = None, timeout: float = 300.0
    ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [EDGEFN, *args, "--admin", self.node.admin],
            env=self.node.env,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if ok:
            assert done.returncode == 0, f"edgefn {' '.join(args)}: {done.returncode}\n{done.stderr}"
        return done


def url_host(url: str) -> str:
    """`http://<id>.fn.localhost:PORT/` -> the Host header a client of that URL sends."""
    return url.strip().removeprefix("http://").rstrip("/")


def get(node: Node, host: str, path: str = "/", **kwargs: Any) -> httpx.Response:
    """A request to the node's public listener as if `host` resolved to it."""
    headers = {"host": host, **kwargs.pop("headers", {})}
    return httpx.get(node.url + path, headers=headers, timeout=60, **kwargs)


@pytest.fixture
def node(node_factory: Callable[..., Node]) -> Node:  # noqa: F811 - the fixture imported above
    """A node whose config has no functions: everything it serves is deployed at run time.
    `URL_CREDS` is there for Function URLs with sigv4 auth (`--credentials-env URL_CREDS`)."""
    return node_factory("", env={"URL_CREDS": "AKIDEXAMPLE:wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"})


@pytest.fixture
def edgefn(node: Node) -> Cli:
    return Cli(node)


def deploy_two_versions(edgefn: Cli, hello: Path, name: str = "hello") -> None:
    """$LATEST = hello with WHO=v1, version 1; then WHO=v2, version 2."""
    edgefn("functions", "deploy", name, str(hello), "--env", "WHO=v1")
    assert edgefn("functions", "publish", name).stdout.strip() == "1"
    edgefn("functions", "config", name, "--env", "WHO=v2")
    assert edgefn("functions", "publish", name).stdout.strip() == "2"


__all__ = ["EDGEFN", "TOKEN", "Cli", "deploy_two_versions", "get", "url_host"]
