"""Phase 5 of the lifecycle: the edge cache between the viewer function and the origin.

This adapts the pipeline's `EdgeRequest`/`EdgeResponse` to `edge.cache`, which holds the HTTP
caching rules. For a route with `cache = {...}`:

    GET/HEAD, fresh entry          -> HIT from memory (304 if the client's own validator matches)
    GET/HEAD, stale with validator -> conditional request downstream; 304 -> REVALIDATED,
                                      anything else replaces the entry (MISS)
    GET, nothing stored            -> MISS: the response streams to the client while it fills
    other methods                  -> passed through (MISS); a success invalidates the URI's entries

Concurrent misses for one key are not coalesced: each goes downstream and the last complete fill
wins. That keeps a slow first client from holding every later one (docs/cache.md).
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from typing import Protocol

from edge.cache import (
    CACHEABLE_METHODS,
    CONDITIONAL,
    DEFAULT_MAX_BYTES,
    HIT,
    MISS,
    REVALIDATED,
    SAFE_METHODS,
    EdgeCache,
    Entry,
    Fill,
    KeySpec,
    first,
    freshness_lifetime,
    parse_cache_control,
    storable,
    vary_names,
    vary_values,
)
from gateway.context import EdgeRequest, EdgeResponse, RawHeaders, empty_body
from routes import Route

log = logging.getLogger("edgefn.cache")

Fetch = Callable[[EdgeRequest], Awaitable[EdgeResponse]]
CACHE_MB_ENV = "EDGEFN_CACHE_MB"
# Headers a 304 from the cache itself keeps (RFC 9110 15.4.5).
NOT_MODIFIED_KEEPS = frozenset(
    {b"cache-control", b"content-location", b"date", b"etag", b"expires", b"vary", b"last-modified", b"via"}
)


class Peers(Protocol):
    """Who else holds this node's cache (the other processes of `serve --workers N`)."""

    async def invalidate(self, partition: str, key: str) -> None: ...


@dataclass(frozen=True, slots=True)
class RouteCache:
    partition: str
    spec: KeySpec
    ttl_s: float
    max_object_bytes: int


class CachePhase:
    def __init__(self, cache: EdgeCache) -> None:
        self.cache = cache
        self._routes: dict[str, RouteCache] = {}
        # the node's other processes, told of each invalidation (edge/node_purges.py; None: alone)
        self.peers: Peers | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> CachePhase:
        """A node's cache, `EDGEFN_CACHE_MB` megabytes large (default 256)."""
        env = os.environ if env is None else env
        raw = env.get(CACHE_MB_ENV, "")
        try:
            max_bytes = int(float(raw) * 1024 * 1024) if raw else DEFAULT_MAX_BYTES
        except ValueError as exc:
            raise ValueError(f"{CACHE_MB_ENV}={raw!r} is not a number of megabytes") from exc
        return cls(EdgeCache(max_bytes=max(1, max_bytes)))

    def compile(self, route: Route) -> RouteCache:
        """Parse the route's cache policy once; a bad `cache.key` fails start-up here."""
        found = self._routes.get(route.name)
        if found is None:
            assert route.cache is not None
            found = RouteCache(
                partition=route.name,
                spec=KeySpec.parse(route.cache.key),
                ttl_s=route.cache.ttl_s,
                max_object_bytes=int(route.cache.max_object_mb * 1024 * 1024),
            )
            self._routes[route.name] = found
        return found

    def key(self, route: Route, request: EdgeRequest) -> str:
        return self.compile(route).spec.key(request.host, request.path, request.query, request.headers)

    async def serve(self, route: Route, request: EdgeRequest, fetch: Fetch) -> EdgeResponse:
        rc = self.compile(route)
        key = rc.spec.key(request.host, request.path, request.query, request.headers)
        if request.method not in CACHEABLE_METHODS:
            response = await fetch(request)
            if request.method not in SAFE_METHODS and response.status < 400:
                self.cache.invalidate(rc.partition, key)
                if self.peers is not None:  # the node's other workers are the same cache to a client
                    await self.peers.invalidate(rc.partition, key)
            return self._miss(response)
        request_cc = parse_cache_control(request.headers)
        if "no-store" in request_cc:
            return self._miss(await fetch(request))
        now = self.cache.clock()
        entry = self.cache.lookup(rc.partition, key, request.headers)
        if entry is not None and entry.usable(now, request_cc):
            self.cache.hits += 1
            entry.hits += 1
            return self._answer(entry, request, HIT, now)
        request_time = self.cache.clock()
        if entry is not None and (entry.etag is not None or entry.last_modified is not None):
            response = _lower(await fetch(_conditional(request, entry)))
            if response.status == 304 and response.error_code is None:
                await _close(response.body)
                fresh = self.cache.refresh(entry, response.headers, request_time, rc.ttl_s)
                self.cache.revalidated += 1
                return self._answer(fresh, request, REVALIDATED, self.cache.clock())
        else:
            response = _lower(await fetch(request))
        self.cache.misses += 1
        return self._fill(rc, key, request, response, request_time)

    def _fill(
        self, rc: RouteCache, key: str, request: EdgeRequest, response: EdgeResponse, request_time: float
    ) -> EdgeResponse:
        why_not = (
            "gateway error"
            if response.error_code is not None
            else storable(request.method, response.status, request.headers, response.headers)
        )
        if why_not is None and not _worth_storing(response.headers, rc.ttl_s, request_time):
            why_not = "no freshness and no validator"
        if why_not is not None:
            log.debug("cache: %s not stored: %s", key, why_not)
            return self._miss(response)
        names = vary_names(response.headers) or ()
        fill = Fill(
            cache=self.cache,
            partition=rc.partition,
            key=key,
            status=response.status,
            headers=list(response.headers),
            vary=vary_values(names, request.headers),
            request_time=request_time,
            default_ttl=rc.ttl_s,
            max_object_bytes=rc.max_object_bytes,
        )
        response.body = fill.tee(response.body)
        return self._miss(response)

    def _miss(self, response: EdgeResponse) -> EdgeResponse:
        response.headers = [(k, v) for k, v in response.headers if k != b"x-cache"]
        response.headers.append((b"x-cache", MISS))
        return response

    def _answer(self, entry: Entry, request: EdgeRequest, state: bytes, now: float) -> EdgeResponse:
        headers = [(k, v) for k, v in entry.headers if k != b"content-length"]
        headers.append((b"age", str(int(entry.age(now))).encode()))
        headers.append((b"x-cache", state))
        served_by = f"cache:{state.decode()}"
        if entry.not_modified_for(request.headers):
            kept = [(k, v) for k, v in headers if k in NOT_MODIFIED_KEEPS or k in (b"age", b"x-cache")]
            return EdgeResponse(status=304, headers=kept, served_by=served_by)
        headers.append((b"content-length", str(entry.body_size).encode()))
        body = empty_body() if request.method == "HEAD" else _chunks(entry.body)
        return EdgeResponse(status=entry.status, headers=headers, body=body, served_by=served_by)


def _lower(response: EdgeResponse) -> EdgeResponse:
    """Header names in lower case: an origin's `ETag` or `Cache-Control` counts like `etag`."""
    response.headers = [(k.lower(), v) for k, v in response.headers]
    return response


def _worth_storing(headers: RawHeaders, ttl_s: float, now: float) -> bool:
    """An entry that is never fresh is only worth keeping if it can be revalidated."""
    if freshness_lifetime(headers, ttl_s, now) > 0:
        return True
    return first(headers, b"etag") is not None or first(headers, b"last-modified") is not None


def _conditional(request: EdgeRequest, entry: Entry) -> EdgeRequest:
    """The request with the entry's validators in place of any the client sent."""
    headers = [(k, v) for k, v in request.headers if k not in CONDITIONAL]
    headers.extend(entry.conditional_headers())
    return replace(request, headers=headers)


async def _chunks(chunks: tuple[bytes, ...]) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


async def _close(body: AsyncIterator[bytes]) -> None:
    aclose = getattr(body, "aclose", None)
    if aclose is not None:
        await aclose()
