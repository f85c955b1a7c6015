"""A small origin server for the examples and the tests.

It streams what it is asked to stream and reports what it received, so a test can tell exactly
what the gateway forwarded (headers, path, query, body hash) and how (chunk timing).

    GET  /healthz                  ok
    ANY  /echo/...                 JSON: method, path, query, headers, body length and sha256
    GET  /bytes?n=N&chunk=C        N deterministic bytes in chunks of C
    GET  /pause?first=A&wait=S     A bytes, a pause of S seconds, then A more
    GET  /sleep?s=S                waits S seconds before answering
    GET  /status/CODE              answers CODE
    GET  /hello                    a short greeting, streamed in three chunks
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

BLOCK = bytes(range(256)) * 4096  # 1 MiB of a known pattern


def pattern(n: int) -> bytes:
    """The first n bytes of the pattern `/bytes` serves, for tests to compare against."""
    reps, rest = divmod(n, len(BLOCK))
    return BLOCK * reps + BLOCK[:rest]


async def _start(send: Send, status: int, headers: list[tuple[bytes, bytes]]) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers})


async def _json(send: Send, status: int, doc: object, extra: list[tuple[bytes, bytes]] | None = None) -> None:
    body = json.dumps(doc).encode()
    await _start(
        send,
        status,
        [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            *(extra or []),
        ],
    )
    await send({"type": "http.response.body", "body": body})


async def app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            await send({"type": message["type"] + ".complete"})
            if message["type"] == "lifespan.shutdown":
                return
    path: str = scope["path"]
    query = {k: v[-1] for k, v in parse_qs(scope.get("query_string", b"").decode()).items()}
    name = os.environ.get("ORIGIN_NAME", "origin")

    if path == "/healthz":
        await _json(send, 200, {"ok": True, "origin": name})
    elif path.startswith("/echo"):
        digest = hashlib.sha256()
        size = 0
        chunks = 0
        while True:
            message = await receive()
            body = message.get("body", b"")
            digest.update(body)
            size += len(body)
            chunks += 1 if body else 0
            if not message.get("more_body"):
                break
        await _json(
            send,
            200,
            {
                "origin": name,
                "method": scope["method"],
                "path": path,
                "raw_path": scope.get("raw_path", b"").decode("latin-1"),
                "query": scope.get("query_string", b"").decode("latin-1"),
                "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in scope["headers"]],
                "body_size": size,
                "body_sha256": digest.hexdigest(),
            },
        )
    elif path == "/bytes":
        n = int(query.get("n", "1048576"))
        chunk = int(query.get("chunk", "65536"))
        await _start(
            send, 200, [(b"content-type", b"application/octet-stream"), (b"content-length", str(n).encode())]
        )
        data = memoryview(pattern(n))
        for i in range(0, n, chunk):
            await send({"type": "http.response.body", "body": bytes(data[i : i + chunk]), "more_body": True})
        await send({"type": "http.response.body", "body": b""})
    elif path == "/pause":
        first = int(query.get("first", "16"))
        wait = float(query.get("wait", "2"))
        await _start(send, 200, [(b"content-type", b"application/octet-stream")])
        await send({"type": "http.response.body", "body": b"a" * first, "more_body": True})
        await asyncio.sleep(wait)
        await send({"type": "http.response.body", "body": b"b" * first})
    elif path == "/sleep":
        await asyncio.sleep(float(query.get("s", "5")))
        await _json(send, 200, {"slept": True})
    elif path.startswith("/status/"):
        await _json(send, int(path.rsplit("/", 1)[1]), {"origin": name})
    elif path == "/hello":
        await _start(
            send, 200, [(b"content-type", b"text/plain; charset=utf-8"), (b"cache-control", b"max-age=30")]
        )
        for part in (b"Hello from the origin ", f"{name} ".encode(), b"(streamed in three chunks)\n"):
            await send({"type": "http.response.body", "body": part, "more_body": True})
            await asyncio.sleep(0.2)
        await send({"type": "http.response.body", "body": b""})
    else:
        await _json(send, 404, {"error": "not found", "path": path})


if __name__ == "__main__":
    import sys

    import uvicorn

    port = int(sys.argv[1]) if len(sys.argv) > 1 else 9001
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")
