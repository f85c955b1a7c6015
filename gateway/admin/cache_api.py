"""Admin endpoints of the edge cache: `POST /cache/purge` and `GET /cache`.

`POST /cache/purge` takes `{"key": "host/path?query"}` (every variant stored under exactly that
key) or `{"prefix": "host/path-prefix"}` (every key starting with it; `""` empties the cache) and
answers `{"purged": N, "told": M}`: N stored variants removed from the cache of the process that
serves the admin request, and M other processes told to do the same. Each process has its own cache
(`serve --workers N`): on a node on its own (`control_plane = "sqlite"`) the purge goes to the
node's other workers through edge/node_purges.py, and the answer comes once each has taken it; in a
fleet (`control_plane = "redis://..."`) it is published to every other process of every node
(docs/fleet.md). Both purge within milliseconds of the answer (docs/cache.md, Purge).
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
from edge.node_purges import MAX_PURGE_CHARS, NodePurgeError
from gateway.admin.errors import admin_error

if TYPE_CHECKING:
    from gateway.app import Gateway

Handler = Callable[[Request], Awaitable[Response]]
Guard = Callable[[Handler], Handler]
MAX_KEYS_SHOWN = 1000


def cache_routes(gateway: Gateway, guard: Guard) -> list[Route]:
    """The cache's admin routes, each behind `guard` (the admin app's bearer-token check)."""

    def node_cache() -> EdgeCache | None:
        return gateway.pipeline.cache.cache if gateway.pipeline is not None else None

    async def purge(request: Request) -> Response:
        cache = node_cache()
        if cache is None:
            return admin_error(503, "starting", "the gateway has not finished starting")
        try:
            body = json.loads(await request.body() or b"null")
        except ValueError:
            return admin_error(400, "bad_request", "the body must be JSON")
        if not isinstance(body, dict) or len(body.keys() & {"key", "prefix"}) != 1:
            return admin_error(400, "bad_request", 'send exactly one of {"key": "..."} or {"prefix": "..."}')
        what = "key" if "key" in body else "prefix"
        value = body[what]
        if not isinstance(value, str) or (what == "key" and not value):
            return admin_error(400, "bad_request", "key must be a non-empty string, prefix a string")
        if len(value) > MAX_PURGE_CHARS:
            return admin_error(400, "bad_request", f"{what} is longer than {MAX_PURGE_CHARS} characters")
        purged = cache.purge_key(value) if what == "key" else cache.purge_prefix(value)
        try:
            if gateway.fleet is not None:
                told = await gateway.fleet.purge(**{what: value})
            else:
                assert gateway.node_purges is not None, "made with the pipeline, without a fleet"
                told = await gateway.node_purges.broadcast(**{what: value})
        except ControlPlaneError as exc:
            return admin_error(
                503, "control_plane_unavailable", f"purged {purged} here, but the fleet was not told: {exc}"
            )
        except NodePurgeError as exc:
            return admin_error(503, "workers_not_told", f"purged {purged} here, but {exc}")
        return JSONResponse({"purged": purged, "told": told})

    async def show(request: Request) -> Response:
        cache = node_cache()
        if cache is None:
            return admin_error(503, "starting", "the gateway has not finished starting")
        return JSONResponse({**asdict(cache.stats()), "keys": cache.keys(MAX_KEYS_SHOWN)})

    return [
        Route("/cache/purge", guard(purge), methods=["POST"]),
        Route("/cache", guard(show), methods=["GET"]),
    ]
