"""edge.cache on its own: freshness rules, keys, the store's byte bound, and the tee's all-or-nothing fill."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from edge.cache import (
    EdgeCache,
    Entry,
    Fill,
    KeySpec,
    etag_matches,
    freshness_lifetime,
    parse_cache_control,
    storable,
)


def h(*pairs: tuple[str, str]) -> list[tuple[bytes, bytes]]:
    return [(k.encode(), v.encode()) for k, v in pairs]


def test_freshness_precedence() -> None:
    now = 1_700_000_000.0
    date = "Tue, 14 Nov 2023 22:13:20 GMT"  # == now
    expires = "Tue, 14 Nov 2023 22:14:20 GMT"  # now + 60
    assert freshness_lifetime(h(("cache-control", "max-age=10, s-maxage=20")), 5, now) == 20
    assert freshness_lifetime(h(("cache-control", "max-age=10"), ("expires", expires)), 5, now) == 10
    assert freshness_lifetime(h(("date", date), ("expires", expires)), 5, now) == 60
    assert freshness_lifetime(h(("expires", "0")), 5, now) == 0
    assert freshness_lifetime(h(("cache-control", "no-cache, max-age=60")), 5, now) == 0
    assert freshness_lifetime(h(("cache-control", "max-age=junk")), 5, now) == 0
    assert freshness_lifetime(h(("content-type", "text/plain")), 5, now) == 5


def test_cache_control_parsing() -> None:
    cc = parse_cache_control(
        h(("cache-control", 'Max-Age="5", no-cache="set-cookie"'), ("cache-control", "public"))
    )
    assert cc == {"max-age": "5", "no-cache": "set-cookie", "public": None}


def test_storable_reasons() -> None:
    ok = h(("cache-control", "max-age=5"))
    assert storable("GET", 200, [], ok) is None
    assert storable("HEAD", 200, [], ok) == "method"
    assert storable("GET", 206, [], ok) == "status 206"
    assert storable("GET", 302, [], []) is not None
    assert storable("GET", 302, [], ok) is None
    assert storable("GET", 200, h(("cache-control", "no-store")), ok) == "request no-store"
    assert storable("GET", 200, h(("authorization", "x")), h(("cache-control", "s-maxage=5"))) is None


def test_etag_weak_comparison() -> None:
    assert etag_matches(b'W/"a", "b"', b'"a"')
    assert etag_matches(b"*", b'"x"')
    assert not etag_matches(b'"a"', b'"ab"')


def test_key_spec() -> None:
    headers = h(("accept-language", "en"), ("cookie", "a=1; session=s1"))
    assert KeySpec.parse([]).key("Example.COM", "/p", b"x=1", headers) == "example.com/p?x=1"
    spec = KeySpec.parse(["query:x", "header:Accept-Language", "cookie:session"])
    assert (
        spec.key("h", "/p", b"y=2&x=1", headers)
        == "h/p query:x=1 header:accept-language=en cookie:session=s1"
    )
    with pytest.raises(ValueError, match="cache key part 'method'"):
        KeySpec.parse(["method"])


def entry(key: str, size: int, partition: str = "r") -> Entry:
    return Entry(partition, key, 200, [], (b"x" * size,), (), 0.0, 0.0, 0.0, 60.0)


def test_store_bound_purge_and_variant_index() -> None:
    cache = EdgeCache(max_bytes=3000)
    for name in ("h/a/1", "h/a/2", "h/b/1"):
        assert cache.store(entry(name, 500))
    assert cache.purge_prefix("h/a/") == 2
    assert cache.lookup("r", "h/a/1", []) is None
    assert cache.lookup("r", "h/b/1", []) is not None
    assert cache.store(entry("h/c", 2000))  # evicts h/b/1: 500 + 2000 + overheads > 3000
    assert cache.lookup("r", "h/b/1", []) is None
    assert cache.keys() == ["h/c"]
    assert not cache.store(entry("h/huge", 5000))
    assert cache.purge_key("h/c") == 1 and len(cache) == 0 and cache.current_bytes == 0


async def source(chunks: list[bytes], fail: bool = False) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk
    if fail:
        raise RuntimeError("upstream broke")


def fill(cache: EdgeCache, limit: int = 1000) -> Fill:
    return Fill(cache, "r", "h/k", 200, h(("cache-control", "max-age=60")), (), 0.0, 60.0, limit)


def test_tee_stores_only_complete_bodies() -> None:
    async def run() -> None:
        cache = EdgeCache()
        got = [c async for c in fill(cache).tee(source([b"a", b"b"]))]
        assert got == [b"a", b"b"]
        stored = cache.lookup("r", "h/k", [])
        assert stored is not None and stored.body == (b"a", b"b")

        cache = EdgeCache()
        tee = fill(cache).tee(source([b"a", b"b"]))
        assert await anext(tee) == b"a"
        await tee.aclose()  # the client went away
        assert cache.lookup("r", "h/k", []) is None

        tee = fill(cache).tee(source([b"a"], fail=True))
        with pytest.raises(RuntimeError):
            _ = [c async for c in tee]
        assert cache.lookup("r", "h/k", []) is None

        got = [c async for c in fill(cache, limit=3).tee(source([b"ab", b"cd"]))]
        assert got == [b"ab", b"cd"] and cache.lookup("r", "h/k", []) is None

    asyncio.run(run())
