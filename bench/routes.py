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


def _pass(fn: Callable[[str, str, str], object]) -> Callable[[], None]:
    def run() -> None:
        for lookup in LOOKUPS:
            fn(*lookup)

    return run


def interleaved_us(fns: list[Callable[[], None]], repeats: int) -> list[float]:
    """Median per-lookup time of each fn, in microseconds.

    The runs alternate between the tables so that a change in machine load (the cores are shared)
    hits every size alike instead of biasing the ratio.
    """
    numbers = []
    for fn in fns:
        number, _ = timeit.Timer(fn).autorange()  # about 0.2 s per run
        numbers.append(max(1, number // 2))
    runs: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            runs[i].append(timeit.Timer(fn).timeit(numbers[i]) / numbers[i])
    return [statistics.median(r) / len(LOOKUPS) * 1e6 for r in runs]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.routes", description=__doc__)
    parser.add_argument("--sizes", default="10,10000", help="route counts, comma-separated")
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]

    compile_ms, tries, scans = [], [], []
    for n in sizes:
        routes = build_routes(n)
        start = time.perf_counter()
        table = RouteTable.compile(routes)
        compile_ms.append((time.perf_counter() - start) * 1e3)
        answers = [m.route.name if m.route else m.status for m in (table.match(*lk) for lk in LOOKUPS)]
        assert answers == EXPECTED, answers
        tries.append(_pass(table.match))
        scans.append(_pass(linear_match(routes)))
    trie_us = interleaved_us(tries, args.repeats)
    scan_us = interleaved_us(scans, 3)
    rows = list(zip(sizes, compile_ms, trie_us, scan_us, strict=True))

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
