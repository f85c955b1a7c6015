"""Admin endpoints of the edge cache: `POST /cache/purge` and `GET /cache`.

`POST /cache/purge` takes `{"key": "host/path?query"}` (every variant stored under exactly that
key) or `{"prefix": "host/path-prefix"}` (every key starting with it; `""` empties the cache) and
answers `{"purged": N}`, the number of stored variants removed. A purge reaches the cache of the
process that serves the admin request: with `--workers N` each worker has its own cache (see
docs/cache.md). In a fleet (`control_plane = "redis://..."`) the purge is also published to every
other process of every node, which purge their own caches when the notice arrives (within
milliseconds); the answer then adds `"told": M`, how many other processes heard it (docs/fleet.md).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from edge.cache import EdgeCache
from edge.errors import ControlPlaneError

if TYPE_CHECKING:
    from gateway.app import Gateway

Handler = Callable[[Request], Awaitable[Response]]
Guard = Callable[[Handler], Handler]
MAX_KEYS_SHOWN = 1000


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message, "request_id": ""}}, status_code=status)


def cache_routes(gateway: Gateway, guard: Guard) -> list[Route]:
    """The cache's admin routes, each behind `guard` (the admin app's bearer-token check)."""

    def node_cache() -> EdgeCache | None:
        return gateway.pipeline.cache.cache if gateway.pipeline is not None else None

    async def purge(request: Request) -> Response:
        cache = node_cache()
        if cache is None:
            return _error(503, "starting", "the gateway has not finished starting")
        try:
            body = json.loads(await request.body() or b"null")
        except ValueError:
            return _error(400, "bad_request", "the body must be JSON")
        if not isinstance(body, dict) or len(body.keys() & {"key", "prefix"}) != 1:
            return _error(400, "bad_request", 'send exactly one of {"key": "..."} or {"prefix": "..."}')
        if "key" in body:
            value, purged = body["key"], None
            if isinstance(value, str) and value:
                purged = cache.purge_key(value)
        else:
            value = body["prefix"]
            purged = cache.purge_prefix(value) if isinstance(value, str) else None
        if purged is None:
            return _error(400, "bad_request", "key must be a non-empty string, prefix a string")
        if gateway.fleet is None:
            return JSONResponse({"purged": purged})
        try:
            told = await gateway.fleet.purge(**{"key" if "key" in body else "prefix": value})
        except ControlPlaneError as exc:
            return _error(
                503, "control_plane_unavailable", f"purged {purged} here, but the fleet was not told: {exc}"
            )
        return JSONResponse({"purged": purged, "told": told})

    async def show(request: Request) -> Response:
        cache = node_cache()
        if cache is None:
            return _error(503, "starting", "the gateway has not finished starting")
        return JSONResponse({**asdict(cache.stats()), "keys": cache.keys(MAX_KEYS_SHOWN)})

    return [
        Route("/cache/purge", guard(purge), methods=["POST"]),
        Route("/cache", guard(show), methods=["GET"]),
    ]
