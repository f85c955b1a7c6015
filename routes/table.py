"""The compiled route table: which route serves a request.

Precedence (docs/routing.md has examples):
1. Host: an exact host, then `*.suffix` patterns from the longest suffix to the shortest, then `*`.
   If no route of a more specific host group serves the path and method, the next group is tried.
2. Path, segment by segment from the left: a literal segment before a `{param}` before a `{*tail}`;
   a path that ends exactly at a route beats a tail that would match nothing. So more literal
   segments (a longer route) win over fewer.
3. Method: HEAD is allowed wherever GET is, and OPTIONS on any route with `cors` (so that a
   preflight reaches the route's CORS policy). A route that does not allow the method is passed
   over for the next candidate. If some route matched host and path but none allowed the method,
   the answer is 405 with the union of the methods that would have been accepted; if nothing
   matched the path, 404.
4. Ties (same host group and the same path shape) keep config order.

Cost: a dict lookup for exact hosts, one dict lookup per label for suffixes, then a walk down a
segment trie per host group, so lookup time follows the depth of the path, not the number of routes.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from routes.config import Route
from routes.patterns import (
    LITERAL,
    PARAM,
    TAIL,
    HostPattern,
    PathPattern,
    Template,
    normalize_host,
    split_path,
)


@dataclass(frozen=True, slots=True)
class _Entry:
    route: Route
    host: HostPattern
    path: PathPattern
    methods: frozenset[str] | None  # None: every method
    rewrite: Template | None
    redirect: Template | None

    def accepts(self, method: str) -> bool:
        return self.methods is None or method in self.methods


class _Node:
    __slots__ = ("here", "literals", "param", "tail")

    def __init__(self) -> None:
        self.literals: dict[str, _Node] = {}
        self.param: _Node | None = None
        self.here: list[_Entry] = []  # routes whose pattern ends at this node
        self.tail: list[_Entry] = []  # routes whose `{*tail}` starts at this node

    def insert(self, entry: _Entry) -> None:
        node = self
        for kind, value in entry.path.segments:
            if kind == LITERAL:
                node = node.literals.setdefault(value, _Node())
            elif kind == PARAM:
                if node.param is None:
                    node.param = _Node()
                node = node.param
            else:
                node.tail.append(entry)
                return
        node.here.append(entry)


def _find(node: _Node, segs: list[str], i: int, method: str, rejected: list[_Entry]) -> _Entry | None:
    """Depth-first in precedence order; the first entry that accepts the method wins."""
    if i == len(segs):
        for entry in node.here:
            if entry.accepts(method):
                return entry
            rejected.append(entry)
    else:
        seg = segs[i]
        child = node.literals.get(seg)
        if child is not None:
            found = _find(child, segs, i + 1, method, rejected)
            if found is not None:
                return found
        if node.param is not None and seg:
            found = _find(node.param, segs, i + 1, method, rejected)
            if found is not None:
                return found
    for entry in node.tail:
        if entry.accepts(method):
            return entry
        rejected.append(entry)
    return None


def _walk(node: _Node, segs: list[str], i: int) -> Iterator[_Entry]:
    """Every entry whose path matches, in precedence order (for explanations only)."""
    if i == len(segs):
        yield from node.here
    else:
        child = node.literals.get(segs[i])
        if child is not None:
            yield from _walk(child, segs, i + 1)
        if node.param is not None and segs[i]:
            yield from _walk(node.param, segs, i + 1)
    yield from node.tail


@dataclass(frozen=True, slots=True)
class RouteMatch:
    """The answer for one request: `status` is 200 (route found), 404 or 405 (see `allowed`)."""

    route: Route | None
    params: dict[str, str] = field(default_factory=dict)
    allowed: tuple[str, ...] = ()
    reasons: tuple[str, ...] = ()
    rewrite: Template | None = None
    redirect: Template | None = None

    @property
    def status(self) -> int:
        if self.route is not None:
            return 200
        return 405 if self.allowed else 404

    def rewritten_path(self) -> str | None:
        """The route's `rewrite.path` filled with this request's params, or None without one."""
        return None if self.rewrite is None else self.rewrite.render(self.params)

    def redirect_location(self) -> str | None:
        """The route's `redirect.to` filled with this request's params, or None without one."""
        return None if self.redirect is None else self.redirect.render(self.params)


_KIND_NAMES = {LITERAL: "a literal segment", PARAM: "a {param}", TAIL: "a {*tail}", -1: "the end of the path"}


class RouteTable:
    """Routes compiled for lookup; built once at start-up, read without locks afterwards."""

    __slots__ = ("_any", "_exact", "_routes", "_suffix")

    def __init__(self) -> None:
        self._exact: dict[str, _Node] = {}
        self._suffix: dict[str, _Node] = {}
        self._any: _Node | None = None
        self._routes: tuple[Route, ...] = ()

    @classmethod
    def compile(cls, routes: Sequence[Route]) -> RouteTable:
        """Raises ValueError naming the route if a pattern or template is invalid."""
        table = cls()
        table._routes = tuple(routes)
        for route in routes:
            try:
                entry = _entry(route)
            except ValueError as exc:
                raise ValueError(f"route {route.name!r}: {exc}") from None
            if entry.host.kind == "exact":
                root = table._exact.setdefault(entry.host.value, _Node())
            elif entry.host.kind == "suffix":
                root = table._suffix.setdefault(entry.host.value, _Node())
            else:
                if table._any is None:
                    table._any = _Node()
                root = table._any
            root.insert(entry)
        return table

    @property
    def routes(self) -> tuple[Route, ...]:
        return self._routes

    def __len__(self) -> int:
        return len(self._routes)

    def _groups(self, host: str) -> Iterator[tuple[str, _Node]]:
        exact = self._exact.get(host)
        if exact is not None:
            yield host, exact
        if self._suffix:
            dot = host.find(".")
            while dot >= 0:
                suffix = host[dot + 1 :]
                node = self._suffix.get(suffix)
                if node is not None:
                    yield "*." + suffix, node
                dot = host.find(".", dot + 1)
        if self._any is not None:
            yield "*", self._any

    def match(self, host: str, path: str, method: str, explain: bool = False) -> RouteMatch:
        """The route for a request; `path` is the raw (percent-encoded) path without the query."""
        if explain:
            return self._explain(host, path, method)
        segs = split_path(path)
        if segs is None:
            return RouteMatch(None)
        method = method.upper()
        rejected: list[_Entry] = []
        host = normalize_host(host)
        # The order of _groups(), unrolled: this is the per-request hot path.
        entry = None
        root = self._exact.get(host)
        if root is not None:
            entry = _find(root, segs, 0, method, rejected)
        if entry is None and self._suffix:
            dot = host.find(".")
            while entry is None and dot >= 0:
                root = self._suffix.get(host[dot + 1 :])
                if root is not None:
                    entry = _find(root, segs, 0, method, rejected)
                dot = host.find(".", dot + 1)
        if entry is None and self._any is not None:
            entry = _find(self._any, segs, 0, method, rejected)
        if entry is not None:
            return RouteMatch(entry.route, entry.path.extract(segs), (), (), entry.rewrite, entry.redirect)
        if rejected:
            return RouteMatch(None, {}, _allowed(rejected))
        return RouteMatch(None)

    def _explain(self, host: str, path: str, method: str) -> RouteMatch:
        method = method.upper()
        norm = normalize_host(host)
        segs = split_path(path)
        reasons: list[str] = []
        if segs is None:
            return RouteMatch(None, {}, (), (f"path {path!r} does not start with '/': no route can match",))
        groups = list(self._groups(norm))
        if not groups:
            reasons.append(f"no host pattern matches host {norm!r}")
        else:
            names = ", ".join(repr(name) for name, _ in groups)
            reasons.append(f"host {norm!r} matches host patterns {names}, tried in this order")
        candidates: list[_Entry] = []
        for name, root in groups:
            found = list(_walk(root, segs, 0))
            if not found:
                reasons.append(f"host {name!r}: no route matches path {path!r}; falling back")
            candidates += found
        winner = next((e for e in candidates if e.accepts(method)), None)
        for entry in candidates:
            if entry is winner:
                reasons.append(f"{_describe(entry)} matches and allows {method}: it wins")
            elif winner is None or candidates.index(entry) < candidates.index(winner):
                reasons.append(f"{_describe(entry)} matches the path but does not allow {method}")
            else:
                reasons.append(f"{_describe(entry)} also matches but loses: {_why(winner, entry, segs)}")
        if winner is not None:
            params = winner.path.extract(segs)
            if params:
                reasons.append(f"params: {params}")
            return RouteMatch(winner.route, params, (), tuple(reasons), winner.rewrite, winner.redirect)
        if candidates:
            allowed = _allowed(candidates)
            reasons.append(f"405: the path matched but {method} is not one of {', '.join(allowed)}")
            return RouteMatch(None, {}, allowed, tuple(reasons))
        reasons.append("404: no route matches")
        return RouteMatch(None, {}, (), tuple(reasons))


def _entry(route: Route) -> _Entry:
    host = HostPattern.parse(route.host)
    path = PathPattern.parse(route.path)
    methods: frozenset[str] | None = None
    if route.methods:
        methods = frozenset(m.upper() for m in route.methods)
        if "GET" in methods:
            methods |= {"HEAD"}
        if route.cors is not None:
            methods |= {"OPTIONS"}  # so that a CORS preflight reaches the route's CORS policy
    rewrite = Template.parse(route.rewrite_path, path.tail) if route.rewrite_path is not None else None
    redirect = Template.parse(route.redirect.to, path.tail) if route.redirect is not None else None
    for template in (rewrite, redirect):
        if template is not None:
            missing = [n for n in template.names if n not in path.names]
            if missing:
                raise ValueError(
                    f"template {template.text!r} names {missing} that {path.text!r} does not capture"
                )
    return _Entry(route, host, path, methods, rewrite, redirect)


def _allowed(entries: list[_Entry]) -> tuple[str, ...]:
    methods: set[str] = set()
    for entry in entries:
        if entry.methods is not None:
            methods |= entry.methods
    return tuple(sorted(methods))


def _describe(entry: _Entry) -> str:
    route = entry.route
    methods = ",".join(sorted(entry.methods)) if entry.methods is not None else "any method"
    return (
        f"route {route.name!r} (routes[{route.index}], host {route.host!r}, path {route.path!r}, {methods})"
    )


def _why(winner: _Entry, loser: _Entry, segs: list[str]) -> str:
    if winner.host.rank != loser.host.rank:
        return f"host {winner.host.text!r} is more specific than {loser.host.text!r}"
    for i in range(len(segs) + 1):
        wk, lk = _kind_at(winner.path, i), _kind_at(loser.path, i)
        if wk != lk:
            where = f"segment {i + 1} ({segs[i]!r})" if i < len(segs) else "after the last segment"
            return f"at {where}, {_KIND_NAMES[wk]} beats {_KIND_NAMES[lk]}"
        if wk == TAIL:
            break
    return f"same host and path precedence; routes[{winner.route.index}] comes first in the config"


def _kind_at(pattern: PathPattern, i: int) -> int:
    if i < len(pattern.segments):
        return pattern.segments[i][0]
    # Past its last segment a pattern without a tail has ended; that ranks with a literal.
    return -1
