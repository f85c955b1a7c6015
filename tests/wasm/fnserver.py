"""A minimal ASGI front for a Runtime (what the gateway does, minus everything else), so tests can
use real sockets for streaming and time to first byte. `/NAME/rest` invokes function NAME with
path `/rest`."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wasm_runtime import (
    FunctionError,
    GuestRequest,
    HttpxTransport,
    Limits,
    LoadedComponent,
    OutboundPolicy,
    Runtime,
)


@dataclass
class Fn:
    wasm: Path
    limits: Limits = field(default_factory=Limits)
    env: Mapping[str, str] = field(default_factory=dict)
    outbound: OutboundPolicy = field(default_factory=OutboundPolicy)


class FnApp:
    def __init__(
        self, data_dir: Path, functions: dict[str, Fn], origins: Mapping[str, str] | None = None
    ) -> None:
        self.data_dir = data_dir
        self.functions = functions
        self.origins = dict(origins or {})
        self.runtime: Runtime | None = None
        self.loaded: dict[str, LoadedComponent] = {}
        self.logs: list[tuple[str, str, str]] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "http":
            await self._http(scope, receive, send)

    async def _lifespan(self, receive: Any, send: Any) -> None:
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                self.runtime = Runtime(self.data_dir, transport=HttpxTransport(self.origins))
                for name, fn in self.functions.items():
                    self.loaded[name] = await self.runtime.load(fn.wasm)
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                if self.runtime is not None:
                    await self.runtime.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert self.runtime is not None
        _, name, *rest = scope["path"].split("/", 2)
        fn = self.functions[name]
        path = "/" + (rest[0] if rest else "")
        if scope["query_string"]:
            path += "?" + scope["query_string"].decode()

        async def body() -> AsyncIterator[bytes]:
            while True:
                msg = await receive()
                if msg["type"] == "http.disconnect":
                    raise ConnectionError("client went away")
                if msg.get("body"):
                    yield msg["body"]
                if not msg.get("more_body"):
                    return

        headers = [(k.decode("latin-1"), v) for k, v in scope["headers"]]
        request = GuestRequest(scope["method"], "http", "fn.test", path, headers, body())
        try:
            resp = await self.runtime.invoke(
                self.loaded[name],
                request,
                limits=fn.limits,
                env=fn.env,
                outbound=fn.outbound,
                request_id=name,
                log=lambda stream, line: self.logs.append((name, stream, line)),
            )
        except FunctionError as exc:
            payload = json.dumps({"error": {"code": exc.code, "message": str(exc)}}).encode()
            await send(
                {
                    "type": "http.response.start",
                    "status": exc.status,
                    "headers": [(b"content-type", b"application/json")],
                }
            )
            await send({"type": "http.response.body", "body": payload})
            return
        await send(
            {
                "type": "http.response.start",
                "status": resp.status,
                "headers": [(k.encode(), v) for k, v in resp.headers],
            }
        )
        async for chunk in resp.body:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
