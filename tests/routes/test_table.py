"""Route precedence, one test per rule, and 404 versus 405."""

from __future__ import annotations

import itertools
import re

import pytest

from routes import Route, RouteTable
from routes.config import Cors, Redirect

_index = itertools.count()


def r(
    name: str, path: str = "/{*rest}", host: str = "*", methods: tuple[str, ...] = (), **kw: object
) -> Route:
    return Route(name=name, index=next(_index), host=host, path=path, methods=methods, function="f", **kw)  # type: ignore[arg-type]


def winner(routes: list[Route], host: str, path: str, method: str = "GET") -> str | None:
    """The winning route's name, checked in both config orders when the rule must not depend on it."""
    match = RouteTable.compile(routes).match(host, path, method)
    return match.route.name if match.route else None


def both_orders(routes: list[Route], host: str, path: str, method: str = "GET") -> str | None:
    first = winner(routes, host, path, method)
    assert winner(list(reversed(routes)), host, path, method) == first
    return first


# -- host precedence ------------------------------------------------------------------------------


def test_exact_host_before_wildcard_suffix() -> None:
    routes = [r("suffix", host="*.example.com"), r("exact", host="api.example.com")]
    assert both_orders(routes, "api.example.com", "/x") == "exact"
    assert both_orders(routes, "www.example.com", "/x") == "suffix"


def test_longer_suffix_before_shorter() -> None:
    routes = [r("short", host="*.example.com"), r("long", host="*.api.example.com")]
    assert both_orders(routes, "v1.api.example.com", "/") == "long"
    assert both_orders(routes, "api.example.com", "/") == "short"


def test_suffix_before_any_host() -> None:
    routes = [r("any"), r("suffix", host="*.example.com")]
    assert both_orders(routes, "a.b.example.com", "/") == "suffix"
    assert both_orders(routes, "example.com", "/") == "any"  # *.example.com needs at least one label


def test_host_ignores_case_port_and_trailing_dot() -> None:
    routes = [r("exact", host="API.example.com"), r("any", path="/nothing")]
    assert winner(routes, "api.EXAMPLE.com:8443", "/x") == "exact"
    assert winner(routes, "api.example.com.", "/x") == "exact"
    assert winner([r("v6", host="[::1]")], "[::1]:8080", "/") == "v6"


def test_host_without_a_path_match_falls_back_to_less_specific_host() -> None:
    routes = [
        r("exact", "/a", host="api.example.com"),
        r("suffix", "/b", host="*.example.com"),
        r("any", "/c"),
    ]
    assert winner(routes, "api.example.com", "/a") == "exact"
    assert winner(routes, "api.example.com", "/b") == "suffix"
    assert winner(routes, "api.example.com", "/c") == "any"
    assert winner(routes, "api.example.com", "/d") is None


# -- path precedence ------------------------------------------------------------------------------


def test_exact_path_before_param() -> None:
    assert both_orders([r("param", "/users/{id}"), r("exact", "/users/me")], "h", "/users/me") == "exact"


def test_param_before_tail() -> None:
    assert both_orders([r("tail", "/users/{*rest}"), r("param", "/users/{id}")], "h", "/users/7") == "param"


def test_longer_before_shorter() -> None:
    routes = [r("root", "/{*rest}"), r("api", "/api/{*rest}"), r("v1", "/api/v1/{*rest}")]
    assert both_orders(routes, "h", "/api/v1/x") == "v1"
    assert both_orders(routes, "h", "/api/v2/x") == "api"
    assert both_orders(routes, "h", "/other") == "root"


def test_precedence_is_decided_segment_by_segment_from_the_left() -> None:
    routes = [r("param-first", "/{a}/b"), r("literal-first", "/a/{b}")]
    assert both_orders(routes, "h", "/a/b") == "literal-first"
    assert both_orders(routes, "h", "/x/b") == "param-first"


def test_exact_end_before_empty_tail() -> None:
    routes = [r("tail", "/api/{*rest}"), r("exact", "/api")]
    assert both_orders(routes, "h", "/api") == "exact"
    assert both_orders(routes, "h", "/api/") == "tail"


def test_backtracks_when_a_literal_branch_dead_ends() -> None:
    routes = [r("literal", "/a/b/c"), r("param", "/a/{x}/d")]
    assert both_orders(routes, "h", "/a/b/d") == "param"


def test_ties_keep_config_order() -> None:
    routes = [r("first", "/u/{id}"), r("second", "/u/{name}")]
    assert winner(routes, "h", "/u/1") == "first"
    assert winner(list(reversed(routes)), "h", "/u/1") == "second"


# -- methods, 404 and 405 -------------------------------------------------------------------------


def test_wrong_method_is_405_with_allowed_methods() -> None:
    table = RouteTable.compile([r("get", "/a", methods=("GET",)), r("post", "/a", methods=("POST", "PUT"))])
    match = table.match("h", "/a", "DELETE")
    assert match.status == 405 and match.route is None
    assert match.allowed == ("GET", "HEAD", "POST", "PUT")


def test_no_path_match_is_404() -> None:
    match = RouteTable.compile([r("a", "/a", methods=("GET",))]).match("h", "/b", "GET")
    assert match.status == 404 and match.allowed == () and match.route is None


def test_head_is_allowed_where_get_is() -> None:
    table = RouteTable.compile([r("a", "/a", methods=("GET",))])
    assert table.match("h", "/a", "head").status == 200


def test_options_is_allowed_where_cors_is_configured() -> None:
    table = RouteTable.compile(
        [r("cors", "/a", methods=("POST",), cors=Cors(allow_origins=("*",))), r("b", "/b")]
    )
    assert table.match("h", "/a", "OPTIONS").status == 200
    assert table.match("h", "/a", "GET").allowed == ("OPTIONS", "POST")


def test_a_route_that_refuses_the_method_is_passed_over() -> None:
    routes = [r("me", "/users/me", methods=("GET",)), r("any-user", "/users/{id}")]
    assert winner(routes, "h", "/users/me", "GET") == "me"
    assert winner(routes, "h", "/users/me", "DELETE") == "any-user"


def test_method_refusal_on_a_specific_host_falls_back_to_wildcard_host() -> None:
    routes = [r("exact", "/a", host="api.example.com", methods=("GET",)), r("any", "/a", methods=("POST",))]
    table = RouteTable.compile(routes)
    assert table.match("api.example.com", "/a", "POST").route == routes[1]
    assert table.match("api.example.com", "/a", "PUT").allowed == ("GET", "HEAD", "POST")


def test_no_routes_and_non_path_targets_are_404() -> None:
    assert RouteTable.compile([]).match("h", "/", "GET").status == 404
    table = RouteTable.compile([r("all")])
    assert table.match("h", "*", "OPTIONS").status == 404
    assert table.match("h", "http://h/", "GET").status == 404


# -- params, encoding and dot segments ------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "rest"), [("/api", ""), ("/api/", ""), ("/api/a", "a"), ("/api/a/b/", "a/b/")]
)
def test_tail_captures_zero_or_more_segments(path: str, rest: str) -> None:
    match = RouteTable.compile([r("api", "/api/{*rest}")]).match("h", path, "GET")
    assert match.params == {"rest": rest}


def test_encoded_slash_stays_inside_its_segment() -> None:
    table = RouteTable.compile([r("file", "/files/{name}"), r("deep", "/files/{a}/{b}")])
    match = table.match("h", "/files/a%2fb", "GET")
    assert match.route is not None and match.route.name == "file"
    assert match.params == {"name": "a%2Fb"}


def test_paths_are_compared_in_canonical_form() -> None:
    table = RouteTable.compile([r("cafe", "/café/~x")])
    assert table.match("h", "/caf%c3%a9/%7Ex", "GET").status == 200
    assert table.match("h", "/caf%C3%A9/~x", "GET").status == 200


def test_dot_segments_are_resolved_before_matching() -> None:
    table = RouteTable.compile([r("static", "/static/{*rest}", methods=("GET",)), r("admin", "/admin")])
    match = table.match("h", "/static/../admin", "GET")
    assert match.route is not None and match.route.name == "admin"
    assert table.match("h", "/static/%2e%2e/admin", "GET").route.name == "admin"  # type: ignore[union-attr]
    assert table.match("h", "/static/./a/./b", "GET").params == {"rest": "a/b"}


def test_param_needs_a_non_empty_segment() -> None:
    table = RouteTable.compile([r("user", "/users/{id}")])
    assert table.match("h", "/users/", "GET").status == 404
    assert table.match("h", "/users/7", "GET").params == {"id": "7"}


def test_rewrite_and_redirect_are_rendered_from_params() -> None:
    routes = [
        r("rw", "/api/{ver}/{*rest}", rewrite_path="/v/{ver}/{rest}"),
        Route(name="rd", index=99, path="/old/{id}", redirect=Redirect("https://new.example/{id}", 301)),
    ]
    table = RouteTable.compile(routes)
    assert table.match("h", "/api/2/a%2Fb/c d", "GET").rewritten_path() == "/v/2/a%2Fb/c%20d"
    match = table.match("h", "/old/x%20y", "GET")
    assert match.redirect_location() == "https://new.example/x%20y"
    assert match.rewritten_path() is None


def test_compile_rejects_invalid_routes_by_name() -> None:
    with pytest.raises(ValueError, match=re.escape("route 'bad': '/a/{*x}/b'")):
        RouteTable.compile([r("bad", "/a/{*x}/b")])
    with pytest.raises(ValueError, match=re.escape("route 'tpl': template '/{nope}'")):
        RouteTable.compile([r("tpl", "/a", rewrite_path="/{nope}")])


# -- explanations ---------------------------------------------------------------------------------


def test_explain_says_why_the_winner_won() -> None:
    routes = [
        r("any", "/users/{id}"),
        r("suffix", "/users/{*rest}", host="*.example.com"),
        r("me-get", "/users/me", host="*.example.com", methods=("GET",)),
    ]
    table = RouteTable.compile(routes)
    match = table.match("api.example.com", "/users/me", "POST", explain=True)
    assert match.route is not None and match.route.name == "suffix"
    text = "\n".join(match.reasons)
    assert "matches host patterns '*.example.com', '*'" in text
    assert "'me-get'" in text and "does not allow POST" in text
    assert "'suffix'" in text and "it wins" in text
    assert "host '*.example.com' is more specific than '*'" in text
    # The hot path leaves reasons empty.
    assert table.match("api.example.com", "/users/me", "POST").reasons == ()


def test_explain_names_the_deciding_segment() -> None:
    table = RouteTable.compile([r("tail", "/a/{*rest}"), r("param", "/a/{x}")])
    text = "\n".join(table.match("h", "/a/b", "GET", explain=True).reasons)
    assert "at segment 2 ('b'), a {param} beats a {*tail}" in text


def test_explain_for_404_and_405() -> None:
    table = RouteTable.compile([r("a", "/a", host="x.com", methods=("GET",))])
    m405 = table.match("x.com", "/a", "PUT", explain=True)
    assert m405.status == 405 and m405.reasons[-1].startswith(
        "405: the path matched but PUT is not one of GET"
    )
    m404 = table.match("y.com", "/a", "GET", explain=True)
    assert m404.status == 404 and m404.reasons == (
        "no host pattern matches host 'y.com'",
        "404: no route matches",
    )
