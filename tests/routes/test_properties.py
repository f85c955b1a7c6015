"""Property tests: bad input never crashes the loader, and the trie agrees with the precedence rules."""

from __future__ import annotations

import copy
import datetime
import json
import math
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from routes import ConfigError, Route, RouteTable, Template, parse_config
from routes.loader import config_from_dict
from routes.patterns import LITERAL, PARAM, TAIL, HostPattern, PathPattern, split_path

# The loader only checks that a component file exists; any file next to this one will do.
CONFIG_PATH = Path(__file__).parent / "edgefn.toml"

VALID: dict[str, Any] = {
    "node": {"name": "n", "region": "eu", "listen": "127.0.0.1:8080", "trusted_proxies": ["10.0.0.0/8"]},
    "regions": {"eu": {"location": [53.3, -6.2]}, "us": {"location": [38.9, -77.0]}},
    "origins": {
        "web": {
            "endpoints": [{"url": "http://127.0.0.1:9001", "region": "eu"}, "http://127.0.0.1:9002"],
            "select": "weighted",
            "health": {"path": "/healthz", "interval_s": 5, "timeout_s": 1},
            "timeouts": {"connect_s": 2, "read_s": 30},
        }
    },
    "functions": {
        "hello": {
            "component": "__init__.py",
            "memory_mb": 64,
            "env": {"A": "b"},
            "outbound": ["web", "example.com:443"],
            "async": {"max_retries": 1, "retry_delays_s": [1, 2]},
            "url": {"auth": {"type": "sigv4", "credentials_env": "CREDS"}, "cors": {"allow_origins": ["*"]}},
            "schedule": ["rate(5 minutes)", "cron(0 12 * * ? *)"],
        }
    },
    "routes": [
        {
            "name": "api",
            "host": "*.example.com",
            "path": "/api/{ver}/{*rest}",
            "methods": ["GET", "POST"],
            "function": "hello:live",
            "rewrite": {"path": "/{ver}/{rest}"},
            "request_headers": {"set": {"x-a": "1"}, "remove": ["cookie"]},
            "auth": {"type": "jwt", "secret_env": "S", "algorithms": ["HS256"], "leeway_s": 5},
            "cors": {"allow_origins": ["https://a.example"], "max_age": 60, "allow_credentials": True},
            "cache": {"ttl_s": 10},
            "edge": {"viewer": "hello"},
        },
        {"name": "old", "path": "/old/{id}", "redirect": {"to": "https://new.example/{id}", "status": 301}},
        {"name": "site", "origin": "web", "auth": {"type": "api_key", "keys_env": "KEYS"}},
    ],
}

_scalars = (
    st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
    | st.dates()
    | st.sampled_from(["*", "/", "/{x}", "none", "HS256", "hello", "web", "eu", "GET", "cron(* * * * * *)"])
)
toml_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)


def _locations(obj: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(obj, dict):
        for key, value in obj.items():
            out += _locations(value, (*prefix, key))
    elif isinstance(obj, list):
        for i, value in enumerate(obj):
            out += _locations(value, (*prefix, i))
    return out


@st.composite
def mutated_configs(draw: st.DrawFn) -> dict[str, Any]:
    data = copy.deepcopy(VALID)
    for _ in range(draw(st.integers(1, 4))):
        locations = _locations(data)
        where = draw(st.sampled_from(locations))
        parent: Any = data
        for step in where[:-1]:
            parent = parent[step]
        op = draw(st.sampled_from(["replace", "delete", "add"]))
        if not where:
            data[draw(st.text(max_size=8))] = draw(toml_values)
        elif op == "replace":
            parent[where[-1]] = draw(toml_values)
        elif op == "delete":
            del parent[where[-1]]
        else:
            target = parent[where[-1]]
            if isinstance(target, dict):
                target[draw(st.text(max_size=8))] = draw(toml_values)
            elif isinstance(target, list):
                target.append(draw(toml_values))
    return data


def _check_problems(exc: ConfigError) -> None:
    assert exc.problems
    for line in str(exc).splitlines():
        assert line.startswith(f"{CONFIG_PATH}: ")
    for problem in exc.problems:
        assert problem.message and len(str(problem).splitlines()) == 1


def test_the_unmutated_config_is_valid() -> None:
    config = config_from_dict(copy.deepcopy(VALID), CONFIG_PATH)
    assert [route.name for route in config.routes] == ["api", "old", "site"]
    assert config.routes[0].auth.leeway_s == 5.0


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_configs())
def test_mutated_configs_load_or_raise_config_error(data: dict[str, Any]) -> None:
    try:
        config_from_dict(data, CONFIG_PATH)
    except ConfigError as exc:
        _check_problems(exc)


def _toml(value: Any) -> str:
    """A tiny TOML writer (inline tables only), enough to send mutated configs through the parser."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return (
            "nan"
            if math.isnan(value)
            else ("inf" if value > 0 else "-inf")
            if math.isinf(value)
            else repr(value)
        )
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, datetime.date):
        return value.isoformat()
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return "{" + ", ".join(f"{json.dumps(k)} = {_toml(v)}" for k, v in value.items()) + "}"


@settings(max_examples=150, deadline=None)
@given(mutated_configs())
def test_mutated_configs_as_toml_text(data: dict[str, Any]) -> None:
    text = "\n".join(f"{json.dumps(k)} = {_toml(v)}" for k, v in data.items())
    try:
        parse_config(text, CONFIG_PATH)
    except ConfigError as exc:
        _check_problems(exc)


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.sampled_from(list('[]{}="\n .abc1#*/')), max_size=60))
def test_random_text_never_crashes(text: str) -> None:
    try:
        parse_config(text, CONFIG_PATH)
    except ConfigError as exc:
        _check_problems(exc)


# -- patterns -------------------------------------------------------------------------------------

_pattern_chars = st.sampled_from(list("/{}*ab_1.%2F -:é?"))


@settings(max_examples=500)
@given(st.text(alphabet=_pattern_chars, max_size=20))
def test_random_path_patterns_compile_or_say_why(text: str) -> None:
    try:
        pattern = PathPattern.parse(text)
    except ValueError as exc:
        assert str(exc)
        return
    assert text.startswith("/")
    assert len(set(pattern.names)) == len(pattern.names)


@settings(max_examples=300)
@given(st.text(alphabet=st.sampled_from(list("*.ab-_:[]1 ")), max_size=16))
def test_random_host_patterns_compile_or_say_why(text: str) -> None:
    try:
        HostPattern.parse(text)
    except ValueError as exc:
        assert str(exc)


@settings(max_examples=300)
@given(st.text(alphabet=_pattern_chars, max_size=20))
def test_random_templates_compile_or_say_why(text: str) -> None:
    try:
        template = Template.parse(text)
    except ValueError as exc:
        assert str(exc)
        return
    template.render(dict.fromkeys(template.names, "v"))


_PCHARS = "abcXYZ019-_~!$&'()*+,;=:@"
_literal = st.text(alphabet=_PCHARS, min_size=1, max_size=4)
# Values as they appear in a request path: allowed characters and escapes of characters that are not.
_value = (
    st.lists(st.sampled_from([*_PCHARS, "%2F", "%20", "%3F", "%25", "%C3%A9", "."]), min_size=1, max_size=5)
    .map("".join)
    .filter(lambda v: v not in (".", ".."))
)


@st.composite
def patterns_with_paths(draw: st.DrawFn) -> tuple[str, str, dict[str, str]]:
    kinds = draw(st.lists(st.sampled_from(["literal", "param"]), max_size=5))
    pattern_parts: list[str] = []
    path_parts: list[str] = []
    params: dict[str, str] = {}
    for i, kind in enumerate(kinds):
        if kind == "literal":
            text = draw(_literal.filter(lambda v: v not in (".", "..")))
            pattern_parts.append(text)
            path_parts.append(text)
        else:
            value = draw(_value)
            pattern_parts.append(f"{{p{i}}}")
            path_parts.append(value)
            params[f"p{i}"] = value
    if draw(st.booleans()):
        tail = draw(st.lists(_value | st.just(""), max_size=3))
        pattern_parts.append("{*rest}")
        path_parts += tail
        params["rest"] = "/".join(tail)
    if not pattern_parts:
        return "/", "/", {}
    return "/" + "/".join(pattern_parts), "/" + "/".join(path_parts), params


@settings(max_examples=400)
@given(patterns_with_paths())
def test_generated_paths_match_and_capture_params(case: tuple[str, str, dict[str, str]]) -> None:
    pattern_text, path, params = case
    pattern = PathPattern.parse(pattern_text)
    assert pattern.match(path) == params
    match = RouteTable.compile([Route(name="r", index=0, path=pattern_text, function="f")]).match(
        "h", path, "GET"
    )
    assert match.params == params
    # A template of the same shape renders the params back into a path with the same params.
    template = Template.parse(pattern_text.replace("{*rest}", "{rest}"), tail=pattern.tail)
    assert pattern.match(template.render(params)) == params


# -- the trie against a linear reference ----------------------------------------------------------

_HOSTS = ["*", "*.x.com", "*.a.x.com", "a.x.com", "b.x.com"]
_SEGMENTS = ["a", "b", "{p}", "{q}"]


@st.composite
def route_sets(draw: st.DrawFn) -> list[Route]:
    routes = []
    for i in range(draw(st.integers(0, 12))):
        segs = draw(st.lists(st.sampled_from(_SEGMENTS), max_size=3))
        segs = [s if s not in segs[:j] or not s.startswith("{") else "a" for j, s in enumerate(segs)]
        if draw(st.booleans()):
            segs.append("{*rest}")
        methods = tuple(draw(st.sets(st.sampled_from(["GET", "POST"]), max_size=2)))
        routes.append(
            Route(
                name=f"r{i}",
                index=i,
                host=draw(st.sampled_from(_HOSTS)),
                path="/" + "/".join(segs),
                methods=methods,
                function="f",
            )
        )
    return routes


def _reference(routes: list[Route], host: str, path: str, method: str) -> tuple[str | None, tuple[str, ...]]:
    """DESIGN precedence by brute force: the best-ranked route that matches host, path and method."""
    segs = split_path(path)
    assert segs is not None

    def rank(route: Route) -> tuple[Any, ...]:
        pattern = PathPattern.parse(route.path)
        kinds = []
        for i in range(len(segs) + 1):
            kind = pattern.segments[i][0] if i < len(pattern.segments) else LITERAL
            kinds.append({LITERAL: 0, PARAM: 1, TAIL: 2}[kind])
            if kind == TAIL:
                break
        return (HostPattern.parse(route.host).rank, kinds, route.index)

    matching = [
        rt
        for rt in routes
        if HostPattern.parse(rt.host).matches(host) and PathPattern.parse(rt.path).match(path) is not None
    ]
    accepting = [
        rt
        for rt in matching
        if not rt.methods or method in rt.methods or (method == "HEAD" and "GET" in rt.methods)
    ]
    if accepting:
        return min(accepting, key=rank).name, ()
    allowed: set[str] = set()
    for rt in matching:
        allowed |= set(rt.methods) | ({"HEAD"} if "GET" in rt.methods else set())
    return None, tuple(sorted(allowed))


@settings(max_examples=400, deadline=None)
@given(
    route_sets(),
    st.sampled_from(["a.x.com", "b.a.x.com", "x.com", "c.com", "B.X.COM:80"]),
    st.lists(st.sampled_from(["a", "b", "c", ""]), max_size=4).map(lambda s: "/" + "/".join(s)),
    st.sampled_from(["GET", "POST", "PUT", "HEAD"]),
)
def test_trie_agrees_with_linear_reference(routes: list[Route], host: str, path: str, method: str) -> None:
    match = RouteTable.compile(routes).match(host, path, method)
    expected_name, expected_allowed = _reference(routes, host, path, method)
    assert (match.route.name if match.route else None) == expected_name
    assert match.allowed == expected_allowed
    explained = RouteTable.compile(routes).match(host, path, method, explain=True)
    assert explained.route == match.route and explained.allowed == match.allowed
