"""The edge cache through a real gateway and a real origin: HIT, MISS, REVALIDATED, age, Vary, keys."""

from __future__ import annotations

import socketserver
import threading
import time
from email.utils import formatdate

import httpx
import pytest

from tests.cache.conftest import CACHED_ROUTE, Headers, Origin, Reply


def get(base: str, path: str, **kw: object) -> httpx.Response:
    return httpx.get(base + path, timeout=10, **kw)  # type: ignore[arg-type]


def test_miss_then_hit_with_age(edge, origin: Origin) -> None:
    origin.on(
        "/a", Reply(headers=[("cache-control", "max-age=60"), ("x-from", "origin")], chunks=[b"one", b"two"])
    )
    base = edge(CACHED_ROUTE)
    first = get(base, "/a")
    assert (first.status_code, first.text, first.headers["x-cache"]) == (200, "onetwo", "MISS")
    second = get(base, "/a")
    assert (second.status_code, second.text, second.headers["x-cache"]) == (200, "onetwo", "HIT")
    assert second.headers["x-from"] == "origin"
    assert int(second.headers["age"]) >= 0
    assert second.headers["content-length"] == "6"
    assert origin.hits("/a") == 1


def test_age_counts_the_origins_age_and_date(edge, origin: Origin) -> None:
    origin.on("/aged", Reply(headers=[("cache-control", "max-age=600"), ("age", "30")]))
    past = formatdate(time.time() - 100, usegmt=True)
    origin.on("/dated", Reply(headers=[("cache-control", "max-age=600"), ("date", past)]))
    base = edge(CACHED_ROUTE)
    get(base, "/aged")
    get(base, "/dated")
    assert 30 <= int(get(base, "/aged").headers["age"]) < 40
    assert 100 <= int(get(base, "/dated").headers["age"]) < 110


def test_entry_expires_after_max_age(edge, origin: Origin) -> None:
    origin.on("/short", Reply(headers=[("cache-control", "max-age=2")]))
    base = edge(CACHED_ROUTE)
    assert get(base, "/short").headers["x-cache"] == "MISS"
    assert get(base, "/short").headers["x-cache"] == "HIT"  # 2 s leaves room for a loaded machine
    time.sleep(2.1)
    assert get(base, "/short").headers["x-cache"] == "MISS"
    assert origin.hits("/short") == 2


def test_freshness_precedence_and_the_routes_ttl(edge, origin: Origin) -> None:
    origin.on("/smax", Reply(headers=[("cache-control", "max-age=0, s-maxage=60")]))
    origin.on("/expired", Reply(headers=[("expires", formatdate(time.time() - 10, usegmt=True))]))
    origin.on("/silent", Reply())
    base = edge(CACHED_ROUTE)
    for path, second in (("/smax", "HIT"), ("/expired", "MISS"), ("/silent", "HIT")):
        get(base, path)
        assert get(base, path).headers["x-cache"] == second, path


def test_zero_ttl_without_validators_is_not_stored(edge, origin: Origin) -> None:
    origin.on("/x", Reply())
    base = edge(CACHED_ROUTE.replace("ttl_s = 60", "ttl_s = 0"))
    get(base, "/x")
    assert get(base, "/x").headers["x-cache"] == "MISS"
    assert origin.hits("/x") == 2


@pytest.mark.parametrize(
    "headers",
    [
        [("cache-control", "no-store")],
        [("cache-control", "private, max-age=60")],
        [("cache-control", "max-age=60"), ("set-cookie", "s=1")],
        [("cache-control", "max-age=60"), ("vary", "*")],
    ],
    ids=["no-store", "private", "set-cookie", "vary-star"],
)
def test_responses_that_are_never_stored(edge, origin: Origin, headers: list[tuple[str, str]]) -> None:
    origin.on("/n", Reply(headers=headers))
    base = edge(CACHED_ROUTE)
    get(base, "/n")
    assert get(base, "/n").headers["x-cache"] == "MISS"
    assert origin.hits("/n") == 2


def test_status_codes(edge, origin: Origin) -> None:
    origin.on("/gone", Reply(status=404, chunks=[b"nope"]))
    origin.on("/boom", Reply(status=500))
    origin.on("/boom-explicit", Reply(status=503, headers=[("cache-control", "max-age=60")]))
    base = edge(CACHED_ROUTE)
    for path, second in (("/gone", "HIT"), ("/boom", "MISS"), ("/boom-explicit", "HIT")):
        get(base, path)
        answer = get(base, path)
        assert answer.headers["x-cache"] == second, path
    assert get(base, "/gone").status_code == 404


def etag_origin(version: list[int]) -> object:
    def handler(h: Headers) -> Reply:
        tag = f'"v{version[0]}"'
        if h.get("if-none-match") == tag:
            return Reply(
                status=304,
                headers=[("etag", tag), ("cache-control", "max-age=0"), ("x-checked", "yes")],
                chunks=[b""],
            )
        return Reply(
            headers=[("etag", tag), ("cache-control", "max-age=0")], chunks=[f"body v{version[0]}".encode()]
        )

    return handler


def test_stale_entry_revalidates_with_etag(edge, origin: Origin) -> None:
    version = [1]
    origin.on("/e", etag_origin(version))  # type: ignore[arg-type]
    base = edge(CACHED_ROUTE)
    assert get(base, "/e").headers["x-cache"] == "MISS"
    again = get(base, "/e")
    assert (again.text, again.headers["x-cache"]) == ("body v1", "REVALIDATED")
    assert origin.last("/e")["if-none-match"] == '"v1"'
    assert again.headers["x-checked"] == "yes"  # headers of the 304 replace the stored ones
    assert int(again.headers["age"]) == 0
    version[0] = 2
    changed = get(base, "/e")
    assert (changed.text, changed.headers["x-cache"]) == ("body v2", "MISS")
    after = get(base, "/e")
    assert (after.text, after.headers["x-cache"]) == ("body v2", "REVALIDATED")
    assert origin.hits("/e") == 4


def test_revalidation_with_last_modified_and_refreshed_freshness(edge, origin: Origin) -> None:
    modified = formatdate(time.time() - 3600, usegmt=True)

    def handler(h: Headers) -> Reply:
        if h.get("if-modified-since") == modified:
            return Reply(status=304, headers=[("cache-control", "max-age=60")], chunks=[b""])
        return Reply(headers=[("last-modified", modified), ("cache-control", "max-age=0")], chunks=[b"lm"])

    origin.on("/lm", handler)
    base = edge(CACHED_ROUTE)
    get(base, "/lm")
    assert get(base, "/lm").headers["x-cache"] == "REVALIDATED"
    hit = get(base, "/lm")  # the 304 said max-age=60: fresh again
    assert (hit.text, hit.headers["x-cache"]) == ("lm", "HIT")
    assert origin.hits("/lm") == 2


def test_no_cache_response_is_stored_but_always_revalidated(edge, origin: Origin) -> None:
    def handler(h: Headers) -> Reply:
        if h.get("if-none-match") == '"t"':
            return Reply(status=304, headers=[("etag", '"t"'), ("cache-control", "no-cache")], chunks=[b""])
        return Reply(headers=[("etag", '"t"'), ("cache-control", "no-cache, max-age=600")], chunks=[b"nc"])

    origin.on("/nc", handler)
    base = edge(CACHED_ROUTE)
    get(base, "/nc")
    for _ in range(2):
        answer = get(base, "/nc")
        assert (answer.text, answer.headers["x-cache"]) == ("nc", "REVALIDATED")
    assert origin.hits("/nc") == 3


def test_request_no_cache_revalidates_a_fresh_entry(edge, origin: Origin) -> None:
    version = [1]
    handler = etag_origin(version)
    origin.on(
        "/r",
        lambda h: (
            Reply(headers=[("etag", '"v1"'), ("cache-control", "max-age=600")], chunks=[b"r"])
            if "if-none-match" not in h
            else handler(h)
        ),
    )  # type: ignore[operator]
    base = edge(CACHED_ROUTE)
    get(base, "/r")
    assert get(base, "/r").headers["x-cache"] == "HIT"
    forced = get(base, "/r", headers={"cache-control": "no-cache"})
    assert forced.headers["x-cache"] == "REVALIDATED"
    assert origin.last("/r")["if-none-match"] == '"v1"'
    assert get(base, "/r", headers={"cache-control": "no-store"}).headers["x-cache"] == "MISS"
    assert origin.hits("/r") == 3


def test_client_conditional_request_answered_from_the_cache(edge, origin: Origin) -> None:
    origin.on("/c", Reply(headers=[("etag", 'W/"c1"'), ("cache-control", "max-age=60")], chunks=[b"cc"]))
    base = edge(CACHED_ROUTE)
    get(base, "/c")
    answer = get(base, "/c", headers={"if-none-match": '"c1"'})
    assert (answer.status_code, answer.content, answer.headers["x-cache"]) == (304, b"", "HIT")
    assert answer.headers["etag"] == 'W/"c1"'
    assert get(base, "/c", headers={"if-none-match": '"other"'}).status_code == 200
    assert origin.hits("/c") == 1


def test_vary_stores_variants(edge, origin: Origin) -> None:
    origin.on(
        "/v",
        lambda h: Reply(
            headers=[("cache-control", "max-age=60"), ("vary", "Accept-Language")],
            chunks=[f"lang={h.get('accept-language', '-')}".encode()],
        ),
    )
    base = edge(CACHED_ROUTE)
    en = get(base, "/v", headers={"accept-language": "en"})
    fr = get(base, "/v", headers={"accept-language": "fr"})
    assert (en.text, fr.text) == ("lang=en", "lang=fr")
    en2 = get(base, "/v", headers={"accept-language": "en"})
    fr2 = get(base, "/v", headers={"accept-language": "fr"})
    assert (en2.text, en2.headers["x-cache"]) == ("lang=en", "HIT")
    assert (fr2.text, fr2.headers["x-cache"]) == ("lang=fr", "HIT")
    assert get(base, "/v").headers["x-cache"] == "MISS"  # no accept-language: a third variant
    assert origin.hits("/v") == 3


def test_query_is_in_the_default_key(edge, origin: Origin) -> None:
    origin.on("/q", lambda h: Reply(headers=[("cache-control", "max-age=60")], chunks=[h["_query"].encode()]))
    base = edge(CACHED_ROUTE)
    assert get(base, "/q?a=1").text == "a=1"
    assert get(base, "/q?a=2").text == "a=2"
    assert get(base, "/q?a=1").headers["x-cache"] == "HIT"


def test_route_key_lists_what_counts(edge, origin: Origin) -> None:
    origin.on(
        "/k",
        lambda h: Reply(
            headers=[("cache-control", "max-age=60")], chunks=[f"{h.get('x-tenant')}:{h['_query']}".encode()]
        ),
    )
    base = edge(
        CACHED_ROUTE.replace(
            "cache = { ttl_s = 60 }", 'cache = { ttl_s = 60, key = ["header:x-tenant", "cookie:plan"] }'
        )
    )
    first = get(base, "/k?utm=1", headers={"x-tenant": "a", "cookie": "plan=pro; other=1"})
    assert first.text == "a:utm=1"
    same = get(base, "/k?utm=2", headers={"x-tenant": "a", "cookie": "other=2; plan=pro"})
    assert (same.text, same.headers["x-cache"]) == ("a:utm=1", "HIT")  # query not in this key
    assert get(base, "/k", headers={"x-tenant": "b", "cookie": "plan=pro"}).headers["x-cache"] == "MISS"
    assert get(base, "/k", headers={"x-tenant": "a", "cookie": "plan=free"}).headers["x-cache"] == "MISS"


def test_authorization_requests_need_public(edge, origin: Origin) -> None:
    origin.on("/private", Reply(headers=[("cache-control", "max-age=60")]))
    origin.on("/public", Reply(headers=[("cache-control", "public, max-age=60")]))
    base = edge(CACHED_ROUTE)
    auth = {"authorization": "Bearer t"}
    get(base, "/private", headers=auth)
    assert get(base, "/private", headers=auth).headers["x-cache"] == "MISS"
    get(base, "/public", headers=auth)
    assert get(base, "/public", headers=auth).headers["x-cache"] == "HIT"


def test_unsafe_request_invalidates_and_head_uses_the_get_entry(edge, origin: Origin) -> None:
    origin.on("/doc", Reply(headers=[("cache-control", "max-age=60")], chunks=[b"document"]))
    base = edge(CACHED_ROUTE)
    get(base, "/doc")
    head = httpx.head(base + "/doc", timeout=10)
    assert (head.status_code, head.headers["x-cache"], head.headers["content-length"]) == (200, "HIT", "8")
    posted = httpx.post(base + "/doc", content=b"new", timeout=10)
    assert posted.headers["x-cache"] == "MISS"
    assert get(base, "/doc").headers["x-cache"] == "MISS"
    assert origin.hits("/doc") == 3


def test_routes_are_kept_apart(edge, origin: Origin) -> None:
    """Two routes rewriting to the same origin path must not answer each other's requests."""
    origin.on(
        "/same",
        lambda h: Reply(headers=[("cache-control", "max-age=60")], chunks=[h.get("x-route", "").encode()]),
    )
    base = edge(
        """
        [[routes]]
        name = "a"
        path = "/a/{*rest}"
        origin = "o"
        rewrite = { path = "/{rest}" }
        request_headers = { set = { "x-route" = "a" } }
        cache = { ttl_s = 60 }

        [[routes]]
        name = "b"
        path = "/b/{*rest}"
        origin = "o"
        rewrite = { path = "/{rest}" }
        request_headers = { set = { "x-route" = "b" } }
        cache = { ttl_s = 60 }
        """
    )
    assert get(base, "/a/same").text == "a"
    assert get(base, "/b/same").text == "b"
    assert get(base, "/a/same").text == "a"
    assert get(base, "/b/same").headers["x-cache"] == "HIT"


def test_uncached_route_has_no_x_cache(edge, origin: Origin) -> None:
    origin.on("/plain", Reply(headers=[("cache-control", "max-age=60")]))
    base = edge('[[routes]]\nname = "plain"\npath = "/{*rest}"\norigin = "o"\n')
    assert "x-cache" not in get(base, "/plain").headers
    assert "x-cache" not in get(base, "/plain").headers
    assert origin.hits("/plain") == 2


def test_a_bad_cache_key_stops_start_up(tmp_path) -> None:
    import asyncio

    from gateway.app import Gateway
    from routes import load_config

    path = tmp_path / "bad.toml"
    path.write_text(
        '[origins.o]\nendpoints = [{ url = "http://127.0.0.1:9" }]\n'
        '[[routes]]\nname = "r"\npath = "/"\norigin = "o"\ncache = { key = ["method"] }\n'
    )
    with pytest.raises(ValueError, match="cache key part 'method'"):
        asyncio.run(Gateway(load_config(path), env={}).startup())


class CapitalisedOrigin(socketserver.StreamRequestHandler):
    """Answers in raw HTTP/1.1 with nginx's capitalised names (uvicorn would lower-case them)."""

    def handle(self) -> None:
        lines = []
        while (line := self.rfile.readline().strip()) != b"":
            lines.append(line.lower())
        conditional = b'if-none-match: "n"' in lines
        status, body = (b"304 Not Modified", b"") if conditional else (b"200 OK", b"nginx-like")
        length = b"" if conditional else b"Content-Length: %d\r\n" % len(body)
        self.wfile.write(
            b"HTTP/1.1 "
            + status
            + b'\r\nETag: "N"\r\nCache-Control: max-age=0\r\nX-Mixed: 1\r\n'
            + length
            + b"Connection: close\r\n\r\n"
            + body
        )


def test_header_names_in_any_case(edge) -> None:
    """nginx sends `ETag` and `Cache-Control` capitalised; they must count like lower-case ones."""
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), CapitalisedOrigin)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        base = edge(
            f"""
            [origins.caps]
            endpoints = [{{ url = "http://127.0.0.1:{server.server_address[1]}" }}]

            [[routes]]
            name = "caps"
            path = "/{{*rest}}"
            origin = "caps"
            cache = {{ ttl_s = 60 }}
            """
        )
        assert get(base, "/case").text == "nginx-like"
        again = get(base, "/case")
        assert (again.text, again.headers["x-cache"], again.headers["x-mixed"]) == (
            "nginx-like",
            "REVALIDATED",
            "1",
        )
        assert again.headers.get_list("content-length") == ["10"]
    finally:
        server.shutdown()
        server.server_close()
