"""Admin endpoints of asynchronous invocations, the dead-letter queue and function logs.

    GET  /functions/{name}/dlq                 events in the DLQ (no bodies, no header values)
    POST /functions/{name}/dlq/redrive         queue every DLQ event again: {"redriven": N}
    GET  /functions/{name}/invocations         queued, running, recent succeeded and DLQ events
    GET  /invocations/{id}                     one event
    GET  /functions/{name}/logs                {"lines": [...]}; ?limit=N, ?request_id=ID
    GET  /functions/{name}/logs?follow=1       text/event-stream: the ring's tail, then new lines

Logs live in the memory of the process that ran the function; with `--workers N` each worker
process has its own ring (docs/invocations.md). The queue and the DLQ are one SQLite database
shared by all of them.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from gateway.admin.errors import admin_error
from gateway.functions.invocations import Invocations

if TYPE_CHECKING:
    from gateway.app import Gateway

Handler = Callable[[Request], Awaitable[Response]]
Guard = Callable[[Handler], Handler]
STATES = ("queued", "running", "succeeded", "dlq")
KEEPALIVE_S = 15.0


def _int(value: str | None, default: int | None) -> int | None:
    try:
        return int(value) if value is not None else default
    except ValueError:
        return default


def invocation_routes(gateway: Gateway, guard: Guard) -> list[Route]:
    """The routes, each behind `guard` (the admin app's bearer-token check)."""

    def service() -> Invocations | None:
        invocations = gateway.invocations
        return invocations if invocations is not None and invocations.started else None

    def unavailable() -> JSONResponse:
        return admin_error(503, "starting", "the gateway has no functions loaded (yet)")

    async def dlq_list(request: Request) -> Response:
        inv = service()
        if inv is None:
            return unavailable()
        name = request.path_params["name"]
        events = await inv.queue.dead_letters(name)
        return JSONResponse({"function": name, "events": [e.describe() for e in events]})

    async def dlq_redrive(request: Request) -> Response:
        inv = service()
        if inv is None:
            return unavailable()
        name = request.path_params["name"]
        return JSONResponse({"function": name, "redriven": await inv.queue.redrive(name)})

    async def invocations(request: Request) -> Response:
        inv = service()
        if inv is None:
            return unavailable()
        name = request.path_params["name"]
        wanted = tuple(s for s in request.query_params.get("state", ",".join(STATES)).split(",") if s)
        bad = [s for s in wanted if s not in STATES]
        if bad or not wanted:
            return admin_error(400, "bad_request", f"state must be among {', '.join(STATES)}")
        events = await inv.queue.events(name, wanted)
        return JSONResponse({"function": name, "events": [e.describe() for e in events]})

    async def invocation(request: Request) -> Response:
        inv = service()
        if inv is None:
            return unavailable()
        event = await inv.queue.get(request.path_params["id"])
        if event is None:
            return admin_error(404, "not_found", "no such invocation (succeeded ones are kept for an hour)")
        return JSONResponse(event.describe())

    async def logs(request: Request) -> Response:
        inv = service()
        if inv is None:
            return unavailable()
        name = request.path_params["name"]
        limit = _int(request.query_params.get("limit"), None)
        request_id = request.query_params.get("request_id")
        if request.query_params.get("follow") in ("1", "true", "yes"):
            return StreamingResponse(
                _follow(inv, name, limit if limit is not None else 100, request_id),
                media_type="text/event-stream",
                headers={"cache-control": "no-cache", "x-accel-buffering": "no"},
            )
        lines = inv.logs.lines(name, limit, request_id)
        return JSONResponse({"function": name, "lines": [line.as_dict() for line in lines]})

    return [
        Route("/functions/{name}/dlq", guard(dlq_list), methods=["GET"]),
        Route("/functions/{name}/dlq/redrive", guard(dlq_redrive), methods=["POST"]),
        Route("/functions/{name}/invocations", guard(invocations), methods=["GET"]),
        Route("/invocations/{id}", guard(invocation), methods=["GET"]),
        Route("/functions/{name}/logs", guard(logs), methods=["GET"]),
    ]


async def _follow(inv: Invocations, name: str, tail: int, request_id: str | None) -> AsyncIterator[bytes]:
    """Server-sent events: one `data:` JSON line per log line; a comment now and then keeps the
    connection open through idle proxies."""
    async with inv.logs.follow(name) as queue:
        for line in inv.logs.lines(name, tail, request_id):
            yield b"data: " + json.dumps(line.as_dict()).encode() + b"\n\n"
        yield b": following\n\n"
        while True:
            try:
                new = await asyncio.wait_for(queue.get(), KEEPALIVE_S)
            except TimeoutError:
                yield b": keep-alive\n\n"
                continue
            if new is None:
                yield b"event: overflow\ndata: {}\n\n"
                return
            if request_id is None or new.request_id == request_id:
                yield b"data: " + json.dumps(new.as_dict()).encode() + b"\n\n"
