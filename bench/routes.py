"""`python -m bench.routes`: route lookup cost with 10 and with 10,000 routes.

The same fixed set of lookups (exact, param, tail, wildcard-host, 404 and 405 answers) runs against
a small and a large table; the large one holds the small one's routes plus thousands of others of
every kind. If lookup were linear in the number of routes, the ratio would be near 1,000; a trie
keeps it near 1. A linear scan over the same routes is timed too, as the baseline a table replaces.
"""

from __future__ import annotations

import argparse
import statistics
import time
import timeit
from collections.abc import Callable

from routes import Route, RouteTable
from routes.patterns import HostPattern, PathPattern

LOOKUPS: tuple[tuple[str, str, str], ...] = (
    ("api.example.com", "/svc/items", "GET"),  # exact host, exact path
    ("www.example.com", "/svc/items/42", "GET"),  # *.example.com, {param}
    ("any.host", "/svc/files/a/b/c.txt", "GET"),  # *, {*tail}
    ("any.host", "/svc/users/7/orders/9", "GET"),  # two params
    ("API.EXAMPLE.COM:443", "/svc/items", "HEAD"),  # case, port, HEAD via GET
    ("any.host", "/svc/items", "DELETE"),  # 405
    ("any.host", "/nothing/here", "GET"),  # 404
    ("any.host", "/svc/x%2Fy/../items", "GET"),  # canonicalisation and dot segments
)
EXPECTED = ["exact-host", "suffix", "tail", "params", "exact-host", 405, 404, "items"]

CORE = (
    ("exact-host", "api.example.com", "/svc/items", ("GET",)),
    ("items", "*", "/svc/items", ("GET", "POST")),
    ("suffix", "*.example.com", "/svc/items/{id}", ()),
    ("tail", "*", "/svc/files/{*path}", ("GET",)),
    ("params", "*", "/svc/users/{user}/orders/{order}", ()),
    ("static", "*", "/static/{*rest}", ("GET",)),
    ("health", "*", "/healthz", ("GET",)),
    ("v1", "*", "/v1/{id}", ()),
    ("cdn", "*.cdn.net", "/{*rest}", ()),
    ("api-root", "api.example.com", "/", ("GET",)),
)


def build_routes(n: int) -> list[Route]:
    """The 10 CORE routes that LOOKUPS hit, then n - 10 others of every kind that they must not."""
    routes = [
        Route(name=name, index=i, host=host, path=path, methods=methods, function="f")
        for i, (name, host, path, methods) in enumerate(CORE[:n])
    ]
    fillers = (
        lambda i: ("*", f"/svc{i}/items"),
        lambda i: ("*", f"/svc{i}/items/{{id}}"),
        lambda i: ("*", f"/svc/items/{{id}}/v{i}"),
        lambda i: ("*", f"/svc{i}/files/{{*path}}"),
        lambda i: ("api.example.com", f"/p{i}/{{id}}"),
        lambda i: (f"h{i}.example.com", "/svc/items"),
        lambda i: (f"*.s{i}.example.com", "/svc/items/{id}"),
        lambda i: ("*", f"/svc/users/{{user}}/orders/{{order}}/x{i}"),
    )
    i = 0
    while len(routes) < n:
        host, path = fillers[i % len(fillers)](i)
        routes.append(
            Route(name=f"r{i}", index=len(routes), host=host, path=path, methods=("GET",), function="f")
        )
        i += 1
    return routes


def linear_match(routes: list[Route]) -> Callable[[str, str, str], Route | None]:
    """The naive baseline: test every route in precedence order (hosts, then patterns pre-parsed)."""
    compiled = sorted(
        ((HostPattern.parse(r.host), PathPattern.parse(r.path), r) for r in routes),
        key=lambda item: (item[0].rank, item[2].index),
    )

    def match(host: str, path: str, method: str) -> Route | None:
        for host_pattern, path_pattern, route in compiled:
            if (
                host_pattern.matches(host)
                and path_pattern.match(path) is not None
                and (not route.methods or method in route.methods)
            ):
                return route
        return None

    return match


def per_lookup_us(fn: Callable[[], object], repeats: int, budget_s: float) -> float:
    """Median over `repeats` runs of one pass over LOOKUPS, per lookup, in microseconds."""
    timer = timeit.Timer(fn)
    number, _ = timer.autorange()
    number = max(1, int(number * budget_s / 0.2 / repeats))
    runs = timer.repeat(repeat=repeats, number=number)
    return statistics.median(runs) / number / len(LOOKUPS) * 1e6


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.routes", description=__doc__)
    parser.add_argument("--sizes", default="10,10000", help="route counts, comma-separated")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]

    rows = []
    for n in sizes:
        routes = build_routes(n)
        start = time.perf_counter()
        table = RouteTable.compile(routes)
        compile_ms = (time.perf_counter() - start) * 1e3
        answers = [m.route.name if m.route else m.status for m in (table.match(*lk) for lk in LOOKUPS)]
        assert answers == EXPECTED, answers

        def trie(table: RouteTable = table) -> None:
            for lookup in LOOKUPS:
                table.match(*lookup)

        linear = linear_match(routes)

        def scan(linear: Callable[[str, str, str], Route | None] = linear) -> None:
            for lookup in LOOKUPS:
                linear(*lookup)

        trie_us = per_lookup_us(trie, args.repeats, 1.0)
        scan_us = per_lookup_us(scan, 3 if n > 1000 else args.repeats, 1.0)
        rows.append((n, compile_ms, trie_us, scan_us))

    print(f"{'routes':>8} {'compile ms':>11} {'trie us/lookup':>15} {'linear scan us/lookup':>22}")
    for n, compile_ms, trie_us, scan_us in rows:
        print(f"{n:>8} {compile_ms:>11.1f} {trie_us:>15.2f} {scan_us:>22.1f}")
    if len(rows) >= 2:
        small, large = rows[0], rows[-1]
        print(
            f"ratio {large[0]}/{small[0]} routes: trie {large[2] / small[2]:.2f}x, "
            f"linear scan {large[3] / small[3]:.0f}x"
        )


if __name__ == "__main__":
    main()
