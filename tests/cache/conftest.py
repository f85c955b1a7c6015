"""A controllable origin and a gateway in front of it, both real servers on loopback ports.

Each test says what the origin answers per path (status, headers, body chunks, pauses, a failure
mid-body) and reads back what the origin saw: how many requests, with which headers. That is how
the tests tell a HIT (the origin saw nothing) from a REVALIDATED (it saw If-None-Match).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import textwrap
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from gateway.app import Gateway
from routes import load_config
from tests.gateway.conftest import shared_data_dir
from tests.invocations.conftest import Node
from tests.servers import ServerThread, free_port

Headers = dict[str, str]
TOKEN = "purge-test-token"
EDGEFN = [sys.executable, "-m", "gateway.cli"]


@dataclass
class Reply:
    status: int = 200
    headers: list[tuple[str, str]] = field(default_factory=list)
    chunks: list[bytes] = field(default_factory=lambda: [b"hello"])
    pause_s: float = 0.0  # between chunks
    fail_after: int | None = None  # raise after this many chunks: the body ends short
    length: bool = True  # send content-length (off: chunked)


Handler = Callable[[Headers], Reply]


class Origin:
    """An ASGI origin whose answers the test sets per path, counting what it receives."""

    def __init__(self) -> None:
        self.handlers: dict[str, Handler] = {}
        self.seen: dict[str, list[Headers]] = defaultdict(list)
        self.url = ""

    def hits(self, path: str) -> int:
        return len(self.seen[path])

    def last(self, path: str) -> Headers:
        return self.seen[path][-1]

    def on(self, path: str, handler: Handler | Reply) -> None:
        self.handlers[path] = handler if callable(handler) else (lambda _h, r=handler: r)

    async def __call__(self, scope: dict[str, Any], receive: Callable[[], Awaitable[Any]], send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        headers["_method"] = scope["method"]
        headers["_query"] = scope["query_string"].decode()
        path = scope["path"]
        self.seen[path].append(headers)
        handler = self.handlers.get(path)
        reply = handler(headers) if handler is not None else Reply(status=404, chunks=[b"not set"])
        raw = [(k.lower().encode(), v.encode()) for k, v in reply.headers]
        body = b"".join(reply.chunks)
        if reply.length and reply.fail_after is None and scope["method"] != "HEAD" and reply.status != 304:
            raw.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": reply.status, "headers": raw})
        if scope["method"] == "HEAD" or reply.status == 304:
            await send({"type": "http.response.body", "body": b""})
            return
        for i, chunk in enumerate(reply.chunks):
            if reply.fail_after is not None and i == reply.fail_after:
                raise RuntimeError("origin fails mid-body (on purpose)")
            if i and reply.pause_s:
                await asyncio.sleep(reply.pause_s)
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})


@pytest.fixture
def origin() -> Iterator[Origin]:
    app = Origin()
    server = ServerThread(app)
    server.config.date_header = False  # uvicorn's Date would come first and hide a test's own
    with server:
        app.url = server.url
        yield app


@pytest.fixture
def edge(tmp_path: Path, origin: Origin) -> Iterator[Callable[..., str]]:
    """Start a gateway whose origin pool `o` is the test's origin; `routes` is TOML for [[routes]]."""
    started: list[ServerThread] = []
    shared_data_dir(tmp_path / "data")  # compiled components shared across tests

    def start(routes: str, env: dict[str, str] | None = None) -> str:
        path = tmp_path / f"edgefn-{len(started)}.toml"
        path.write_text(
            textwrap.dedent(
                f"""
                [node]
                name = "edge-test"
                data_dir = "{tmp_path / "data"}"

                [origins.o]
                endpoints = [{{ url = "{origin.url}" }}]
                """
            )
            + textwrap.dedent(routes)
        )
        server = ServerThread(Gateway(load_config(path), env=env or {})).start()
        started.append(server)
        return server.url

    yield start
    for server in started:
        server.stop()


CACHED_ROUTE = """
[[routes]]
name = "cached"
path = "/{*rest}"
origin = "o"
cache = { ttl_s = 60 }
"""


@contextlib.contextmanager
def serve_node(tmp_path: Path, origin: Origin, *, workers: int = 1) -> Iterator[tuple[str, str]]:
    """`edgefn serve --workers N` in front of `origin`, one route `cached` (ttl 600 s) for every
    path; yields (public URL, admin URL) once the admin API answers (one worker is up)."""
    public, admin = free_port(), free_port()
    config = tmp_path / "edgefn.toml"
    config.write_text(
        f"""
[node]
listen = "127.0.0.1:{public}"
admin_listen = "127.0.0.1:{admin}"
data_dir = "{tmp_path / "data"}"

[origins.o]
endpoints = [{{ url = "{origin.url}" }}]

[[routes]]
name = "cached"
path = "/{{*rest}}"
origin = "o"
cache = {{ ttl_s = 600 }}
"""
    )
    node = Node(
        config=config,
        port=public,
        admin_port=admin,
        log_path=tmp_path / "edgefn.log",
        env={**os.environ, "EDGEFN_ADMIN_TOKEN": TOKEN},
    )
    try:
        yield node.start(timeout=60, workers=workers).url, node.admin
    finally:
        node.stop()
