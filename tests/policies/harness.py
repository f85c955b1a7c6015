"""A tiny real HTTP server that applies one route's policies the way the gateway does.

The gateway's own pipeline belongs to another package; these tests need the policies behind a
real socket (curl must reach them, headers must arrive as starlette's case-insensitive `Headers`),
so this ASGI app does the minimum: answer preflights, authenticate, add CORS headers, and report
the principal or the failure as JSON. The last `AuthRequest` is kept so tests can replay it.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import uvicorn
from starlette.datastructures import Headers

from gateway.policies.auth import Authenticator, AuthFailure, AuthRequest, NoAuth
from gateway.policies.cors import CorsPolicy
from tests.servers import free_port

Send = Callable[[dict[str, Any]], Awaitable[None]]
Receive = Callable[[], Awaitable[dict[str, Any]]]


class PolicyApp:
    def __init__(self, authenticator: Authenticator | None = None, cors: CorsPolicy | None = None) -> None:
        self.authenticator = authenticator or NoAuth()
        self.cors = cors
        self.requests: list[AuthRequest] = []
        self.target_hits = 0

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        assert scope["type"] == "http"
        headers = Headers(scope=scope)
        method = scope["method"]
        if self.cors is not None and self.cors.is_preflight(method, headers):
            status, extra = self.cors.preflight(headers)
            await self._respond(send, status, b"", extra)
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        needs_body = self.authenticator.needs_body and "x-amz-content-sha256" not in headers
        request = AuthRequest(
            method=method,
            path=scope["raw_path"].decode("latin-1"),
            query_string=scope["query_string"].decode("latin-1"),
            headers=headers,
            body=body if needs_body else None,
        )
        self.requests.append(request)
        cors_headers = self.cors.response_headers(headers) if self.cors else []
        try:
            principal = await self.authenticator.authenticate(request)
        except AuthFailure as failure:
            payload = {"error": {"code": failure.code, "message": failure.message}}
            await self._respond(
                send, failure.status, json.dumps(payload).encode(), failure.headers + cors_headers
            )
            return
        self.target_hits += 1
        payload = {"kind": principal.kind, "id": principal.id, "claims": dict(principal.claims)}
        await self._respond(send, 200, json.dumps(payload, default=str).encode(), cors_headers)

    @staticmethod
    async def _respond(send: Send, status: int, body: bytes, headers: list[tuple[str, str]]) -> None:
        raw = [(k.encode(), v.encode()) for k, v in headers]
        raw.append((b"content-type", b"application/json"))
        raw.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": raw})
        await send({"type": "http.response.body", "body": body})


class Served:
    """uvicorn on a loopback port, in a thread with its own event loop."""

    def __init__(self, app: Any) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, lifespan="off", log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=lambda: asyncio.run(self.server.serve()), daemon=True)

    def __enter__(self) -> Served:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("test server did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
