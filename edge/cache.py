"""The edge cache: a shared HTTP cache (an RFC 9111 subset) in memory, bounded in bytes.

Framework-free: headers are raw lists of lower-case `(bytes, bytes)` pairs and bodies are async
iterators of bytes, so `gateway.cache_phase` adapts the pipeline to it without this module knowing
the gateway. What it decides:

- the key (`KeySpec`): host + path + query by default, or host + path + what a route's
  `cache.key` lists; the response's `Vary` adds a secondary key, so variants are stored side by side;
- whether a response may be stored (`storable`) and for how long it is fresh
  (`freshness_lifetime`: s-maxage > max-age > Expires > the route's `ttl_s`);
- an entry's `age` (RFC 9111 4.2.3, without clock-skew tricks), and whether a request may take it
  as it is or must revalidate it (`Entry.usable`);
- how a 304 refreshes an entry (`EdgeCache.refresh`), and how the first response streams to its
  client while a copy fills the cache (`Fill.tee`): a fill that grows past the route's object limit,
  or whose body does not end cleanly, is dropped, never stored in part.

Entries live in one `cachetools.LRUCache` per node, sized by their bytes. All of it runs on one
event loop, so nothing here locks.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from urllib.parse import parse_qsl

from cachetools import LRUCache

log = logging.getLogger("edgefn.cache")

RawHeaders = list[tuple[bytes, bytes]]
CacheControl = dict[str, str | None]
# An entry's place in the store: (partition, key, the request's values of the Vary headers).
StoreKey = tuple[str, str, tuple[tuple[bytes, bytes], ...]]

HIT, MISS, REVALIDATED = b"HIT", b"MISS", b"REVALIDATED"
CACHEABLE_METHODS = frozenset({"GET", "HEAD"})
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
# RFC 9110 15.1: heuristically cacheable, so the route's ttl_s applies when the origin says nothing.
# 206 is left out: ranges are not stored.
HEURISTIC_STATUSES = frozenset({200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501})
# Headers an entry never keeps: the cache computes them for every answer.
NOT_STORED = frozenset({b"age", b"x-cache", b"x-request-id", b"connection", b"transfer-encoding"})
# RFC 9111 3.2: a 304 does not change the framing of the body the cache already holds.
NOT_UPDATED = frozenset({b"content-length", b"content-encoding", b"content-range", b"transfer-encoding"})
CONDITIONAL = frozenset(
    {b"if-none-match", b"if-modified-since", b"if-match", b"if-unmodified-since", b"if-range"}
)
ENTRY_OVERHEAD = 256  # bytes counted per entry beyond its body and headers (dicts, floats, key)
DEFAULT_MAX_BYTES = 256 * 1024 * 1024


# --- header helpers ------------------------------------------------------------------------------


def values(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> list[bytes]:
    return [v for k, v in headers if k == name]


def first(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    return next((v for k, v in headers if k == name), None)


def parse_cache_control(headers: Iterable[tuple[bytes, bytes]]) -> CacheControl:
    """Directives of every `cache-control` header, lower-case names, values unquoted.

    A directive given twice keeps its first value; `no-cache="set-cookie"` and
    `private="x"` count as the plain directive (RFC 9111 allows the stricter reading).
    """
    out: CacheControl = {}
    for value in values(headers, b"cache-control"):
        for part in value.decode("latin-1").split(","):
            name, eq, arg = part.strip().partition("=")
            name = name.strip().lower()
            if name and name not in out:
                out[name] = arg.strip().strip('"') if eq else None
    return out


def seconds(directive: str | None) -> float | None:
    """A delta-seconds argument; anything else (missing, negative, junk) is None."""
    if directive is None:
        return None
    try:
        n = int(directive)
    except ValueError:
        return None
    return float(n) if n >= 0 else None


def http_date(value: bytes | None) -> float | None:
    if value is None:
        return None
    try:
        return parsedate_to_datetime(value.decode("latin-1")).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def vary_names(headers: Iterable[tuple[bytes, bytes]]) -> tuple[bytes, ...] | None:
    """Header names the response varies on, sorted; None for `Vary: *` (never stored)."""
    names: set[bytes] = set()
    for value in values(headers, b"vary"):
        for token in value.split(b","):
            token = token.strip().lower()
            if token == b"*":
                return None
            if token:
                names.add(token)
    return tuple(sorted(names))


def vary_values(names: Sequence[bytes], headers: RawHeaders) -> tuple[tuple[bytes, bytes], ...]:
    """The request's value of each Vary header, repeats joined and whitespace normalised."""
    out = []
    for name in names:
        parts = [p.strip() for v in values(headers, name) for p in v.split(b",")]
        out.append((name, b",".join(p for p in parts if p)))
    return tuple(out)


def etag_matches(if_none_match: bytes, etag: bytes) -> bool:
    """Weak comparison (RFC 9110 13.1.2), as If-None-Match asks for."""
    if if_none_match.strip() == b"*":
        return True
    tag = etag.strip().removeprefix(b"W/")
    return any(t.strip().removeprefix(b"W/") == tag for t in if_none_match.split(b","))


# --- the key -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KeySpec:
    """What a route's cache key holds beyond host and path, compiled from `cache.key`.

    Empty `cache.key`: the whole query string. Otherwise exactly what it lists: `"query"` (the whole
    query string), `"query:NAME"`, `"header:NAME"`, `"cookie:NAME"`. The key reads
    `host/path?query` then ` part=value` for each listed part, so a prefix purge of `host/path`
    covers every variant of that path.
    """

    query: bool = True
    query_params: tuple[str, ...] = ()
    headers: tuple[bytes, ...] = ()
    cookies: tuple[str, ...] = ()

    @classmethod
    def parse(cls, items: Sequence[str]) -> KeySpec:
        if not items:
            return cls()
        query = False
        params: list[str] = []
        headers: list[bytes] = []
        cookies: list[str] = []
        for item in items:
            kind, _, name = item.partition(":")
            kind = kind.strip().lower()
            name = name.strip()
            if kind == "query" and not name:
                query = True
            elif kind == "query":
                params.append(name)
            elif kind == "header" and name:
                headers.append(name.lower().encode("latin-1"))
            elif kind == "cookie" and name:
                cookies.append(name)
            else:
                raise ValueError(
                    f"cache key part {item!r}: expected 'query', 'query:NAME', 'header:NAME' or 'cookie:NAME'"
                )
        return cls(query, tuple(params), tuple(headers), tuple(cookies))

    def key(self, host: str, path: str, query: bytes, headers: RawHeaders) -> str:
        parts = [host.lower() + path]
        if self.query and query:
            parts[0] += "?" + query.decode("latin-1")
        if self.query_params:
            pairs = parse_qsl(query.decode("latin-1"), keep_blank_values=True)
            for name in self.query_params:
                got = [v for k, v in pairs if k == name]
                parts.append(f"query:{name}={','.join(got)}")
        for header_name in self.headers:
            joined = b",".join(v.strip() for v in values(headers, header_name)).decode("latin-1")
            parts.append(f"header:{header_name.decode('latin-1')}={joined}")
        if self.cookies:
            jar = cookies(headers)
            parts.extend(f"cookie:{name}={jar.get(name, '')}" for name in self.cookies)
        return " ".join(parts)


def cookies(headers: RawHeaders) -> dict[str, str]:
    jar: dict[str, str] = {}
    for value in values(headers, b"cookie"):
        for pair in value.decode("latin-1").split(";"):
            name, eq, val = pair.strip().partition("=")
            if eq and name and name not in jar:
                jar[name] = val
    return jar


# --- storing: may we, and for how long -----------------------------------------------------------


def storable(
    method: str, status: int, request_headers: RawHeaders, response_headers: RawHeaders
) -> str | None:
    """Why a response may not be stored (RFC 9111 3), or None when it may."""
    if method != "GET":
        return "method"
    request_cc = parse_cache_control(request_headers)
    if "no-store" in request_cc:
        return "request no-store"
    cc = parse_cache_control(response_headers)
    if "no-store" in cc:
        return "no-store"
    if "private" in cc:
        return "private"
    if status < 200 or status in (206, 304) or status >= 600:
        return f"status {status}"
    if status not in HEURISTIC_STATUSES and not explicit_freshness(cc, response_headers):
        return f"status {status} without explicit freshness"
    if first(request_headers, b"authorization") is not None and not (
        "public" in cc or "s-maxage" in cc or "must-revalidate" in cc
    ):
        return "authorization without public or s-maxage"
    if first(response_headers, b"set-cookie") is not None:
        return "set-cookie"
    if vary_names(response_headers) is None:
        return "vary *"
    return None


def explicit_freshness(cc: CacheControl, headers: RawHeaders) -> bool:
    return "s-maxage" in cc or "max-age" in cc or first(headers, b"expires") is not None


def freshness_lifetime(headers: RawHeaders, default_ttl: float, response_time: float) -> float:
    """s-maxage, else max-age, else Expires - Date, else the route's ttl; no-cache makes it 0."""
    cc = parse_cache_control(headers)
    if "no-cache" in cc:
        return 0.0
    for directive in ("s-maxage", "max-age"):
        if directive in cc:
            return seconds(cc[directive]) or 0.0
    expires_raw = first(headers, b"expires")
    if expires_raw is not None:
        expires = http_date(expires_raw)
        if expires is None:  # RFC 9111 5.3: an invalid Expires (such as "0") is in the past
            return 0.0
        date = http_date(first(headers, b"date")) or response_time
        return max(0.0, expires - date)
    return default_ttl


# --- entries and the store -----------------------------------------------------------------------


@dataclass(slots=True)
class Entry:
    partition: str
    key: str
    status: int
    headers: RawHeaders
    body: tuple[bytes, ...]
    vary: tuple[tuple[bytes, bytes], ...]
    request_time: float
    response_time: float
    initial_age: float
    lifetime: float
    size: int = 0
    hits: int = field(default=0)

    @property
    def store_key(self) -> StoreKey:
        return (self.partition, self.key, self.vary)

    @property
    def body_size(self) -> int:
        return sum(len(c) for c in self.body)

    @property
    def etag(self) -> bytes | None:
        return first(self.headers, b"etag")

    @property
    def last_modified(self) -> bytes | None:
        return first(self.headers, b"last-modified")

    def age(self, now: float) -> float:
        return self.initial_age + max(0.0, now - self.response_time)

    def usable(self, now: float, request_cc: CacheControl) -> bool:
        """May this request take the entry without asking the origin?"""
        if "no-cache" in request_cc:
            return False
        age = self.age(now)
        limit = seconds(request_cc.get("max-age")) if "max-age" in request_cc else None
        if limit is not None and age > limit:
            return False
        return age < self.lifetime

    def conditional_headers(self) -> RawHeaders:
        out: RawHeaders = []
        if self.etag is not None:
            out.append((b"if-none-match", self.etag))
        if self.last_modified is not None:
            out.append((b"if-modified-since", self.last_modified))
        return out

    def not_modified_for(self, request_headers: RawHeaders) -> bool:
        """Does the client's own conditional request match this entry (answer 304)?"""
        inm = first(request_headers, b"if-none-match")
        if inm is not None:
            return self.etag is not None and etag_matches(inm, self.etag)
        ims = http_date(first(request_headers, b"if-modified-since"))
        lm = http_date(self.last_modified)
        return ims is not None and lm is not None and lm <= ims


def initial_age(headers: RawHeaders, request_time: float, response_time: float) -> float:
    """RFC 9111 4.2.3 corrected_initial_age: the larger of the apparent age and Age + transit."""
    date = http_date(first(headers, b"date"))
    apparent = max(0.0, response_time - date) if date is not None else 0.0
    age_value = seconds((first(headers, b"age") or b"").decode("latin-1").strip() or None) or 0.0
    return max(apparent, age_value + max(0.0, response_time - request_time))


def stored_headers(headers: RawHeaders) -> RawHeaders:
    lowered = ((k.lower(), v) for k, v in headers)
    return [(k, v) for k, v in lowered if k not in NOT_STORED]


class _Store(LRUCache):  # type: ignore[type-arg]
    """An LRUCache that tells the owner about every removal, evictions included."""

    def __init__(self, max_bytes: int, on_remove: Callable[[StoreKey], None]) -> None:
        super().__init__(maxsize=max_bytes, getsizeof=lambda entry: entry.size)
        self._on_remove = on_remove

    def __delitem__(self, key: StoreKey) -> None:
        super().__delitem__(key)
        self._on_remove(key)


@dataclass(frozen=True, slots=True)
class Stats:
    entries: int
    bytes: int
    max_bytes: int
    hits: int
    misses: int
    revalidated: int
    stored: int
    evicted_or_purged: int


class EdgeCache:
    """One node's cache: entries by (partition, key, vary values), LRU-evicted by total bytes.

    `partition` keeps routes apart (two routes may forward different origins' content under the
    same host and path); keys, and purges, are shared across partitions.
    """

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES, clock: Callable[[], float] = time.time) -> None:
        self.max_bytes = max_bytes
        self.clock = clock
        # (partition, key) -> the vary tuples stored for it, newest last; kept in step with the store.
        self._variants: dict[tuple[str, str], dict[tuple[tuple[bytes, bytes], ...], None]] = {}
        self._store = _Store(max_bytes, self._forget)
        self.hits = self.misses = self.revalidated = self.stored = self.removed = 0

    def _forget(self, key: StoreKey) -> None:
        partition, k, vary = key
        variants = self._variants.get((partition, k))
        if variants is not None:
            variants.pop(vary, None)
            if not variants:
                del self._variants[(partition, k)]
        self.removed += 1

    def __len__(self) -> int:
        return len(self._store)

    @property
    def current_bytes(self) -> int:
        return int(self._store.currsize)

    def lookup(self, partition: str, key: str, request_headers: RawHeaders) -> Entry | None:
        """The newest stored variant whose Vary values match this request."""
        variants = self._variants.get((partition, key))
        if not variants:
            return None
        for vary in reversed(list(variants)):
            names = tuple(name for name, _ in vary)
            if vary_values(names, request_headers) == vary:
                entry: Entry = self._store[(partition, key, vary)]  # marks it recently used
                return entry
        return None

    def store(self, entry: Entry) -> bool:
        entry.size = (
            entry.body_size + sum(len(k) + len(v) for k, v in entry.headers) + len(entry.key) + ENTRY_OVERHEAD
        )
        if entry.size > self.max_bytes:
            return False
        self._store[entry.store_key] = entry  # replaces a stored variant in place
        self._variants.setdefault((entry.partition, entry.key), {})[entry.vary] = None
        self.stored += 1
        return True

    def refresh(self, entry: Entry, headers: RawHeaders, request_time: float, default_ttl: float) -> Entry:
        """RFC 9111 4.3.4: a 304's headers replace the stored ones (framing excepted)."""
        now = self.clock()
        update = [(k, v) for k, v in stored_headers(headers) if k not in NOT_UPDATED]
        names = {k for k, _ in update}
        merged = [(k, v) for k, v in entry.headers if k not in names] + update
        fresh = Entry(
            partition=entry.partition,
            key=entry.key,
            status=entry.status,
            headers=merged,
            body=entry.body,
            vary=entry.vary,
            request_time=request_time,
            response_time=now,
            initial_age=initial_age(merged, request_time, now),
            lifetime=freshness_lifetime(merged, default_ttl, now),
            hits=entry.hits,
        )
        if entry.store_key in self._store:
            self.store(fresh)
        return fresh

    def invalidate(self, partition: str, key: str) -> int:
        """RFC 9111 4.4: an unsafe request that succeeded makes the stored answers for its URI stale."""
        variants = self._variants.get((partition, key))
        if not variants:
            return 0
        doomed = [(partition, key, vary) for vary in variants]
        for sk in doomed:
            del self._store[sk]
        return len(doomed)

    def purge_key(self, key: str) -> int:
        """Remove every variant stored under exactly `key`, in every partition."""
        return self._purge(lambda k: k == key)

    def purge_prefix(self, prefix: str) -> int:
        """Remove every entry whose key starts with `prefix` (host + path prefix); "" clears all."""
        return self._purge(lambda k: k.startswith(prefix))

    def _purge(self, match: Callable[[str], bool]) -> int:
        doomed = [
            (partition, key, vary)
            for (partition, key), variants in self._variants.items()
            if match(key)
            for vary in variants
        ]
        for sk in doomed:
            del self._store[sk]
        return len(doomed)

    def keys(self, limit: int = 1000) -> list[str]:
        seen: dict[str, None] = {}
        for _, key in self._variants:
            seen[key] = None
            if len(seen) >= limit:
                break
        return list(seen)

    def stats(self) -> Stats:
        return Stats(
            entries=len(self._store),
            bytes=self.current_bytes,
            max_bytes=self.max_bytes,
            hits=self.hits,
            misses=self.misses,
            revalidated=self.revalidated,
            stored=self.stored,
            evicted_or_purged=self.removed,
        )


# --- filling while streaming ---------------------------------------------------------------------


@dataclass
class Fill:
    """A response on its way to the client, and the entry it becomes if its body ends cleanly."""

    cache: EdgeCache
    partition: str
    key: str
    status: int
    headers: RawHeaders
    vary: tuple[tuple[bytes, bytes], ...]
    request_time: float
    default_ttl: float
    max_object_bytes: int

    def __post_init__(self) -> None:
        declared = first(self.headers, b"content-length")
        self.declared = int(declared) if declared is not None and declared.strip().isdigit() else None

    async def tee(self, body: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        """Yield every chunk as it comes; store the copy only after the last one.

        Each chunk is handed on before it is kept, so the client never waits for the fill. An
        exception from upstream, or the consumer closing us early (a client gone), ends the
        generator before the store line: a partial body is never stored.
        """
        parts: list[bytes] = []
        size = 0
        filling = self.declared is None or self.declared <= self.max_object_bytes
        complete = False
        try:
            async for chunk in body:
                if filling:
                    size += len(chunk)
                    if size > self.max_object_bytes:
                        filling = False
                        parts = []
                        log.info("cache: %s over %d bytes, not stored", self.key, self.max_object_bytes)
                    else:
                        parts.append(chunk)
                yield chunk
            complete = True
        finally:
            aclose = getattr(body, "aclose", None)
            if aclose is not None:
                await aclose()
            if not complete and filling:
                log.info("cache: fill of %s abandoned after %d bytes", self.key, size)
        if not filling:
            return
        if self.declared is not None and self.declared != size:
            log.warning(
                "cache: %s ended at %d of %d declared bytes, not stored", self.key, size, self.declared
            )
            return
        now = self.cache.clock()
        self.cache.store(
            Entry(
                partition=self.partition,
                key=self.key,
                status=self.status,
                headers=stored_headers(self.headers),
                body=tuple(parts),
                vary=self.vary,
                request_time=self.request_time,
                response_time=now,
                initial_age=initial_age(self.headers, self.request_time, now),
                lifetime=freshness_lifetime(self.headers, self.default_ttl, now),
            )
        )
