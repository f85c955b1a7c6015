"""The `edgefn` command line (DESIGN.md, "Command line").

Config problems print one line each (file, key path, problem) and exit with status 2, both for
`check` and before `serve` binds anything.

Start-up time counts (a restart is a node out of service): each command imports what it needs when
it runs (`serve` the gateway, the admin commands their HTTP client), and garbage collection waits
while the imports and the config are made (`collection_paused`).
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit

from routes import Config, ConfigError, RouteTable, load_config, unknown_functions

EXIT_BAD_CONFIG = 2


@contextmanager
def collection_paused() -> Iterator[None]:
    """No garbage collection while start-up makes what lives as long as the process.

    Imports and the config make some 50,000 objects that are never garbage; collecting as they
    come traverses them again and again, each full pass longer than the last (20-50 ms of a
    restart). Afterwards they are frozen (`gc.freeze`: left out of every later collection, which
    they would survive anyway) and collection resumes as it was.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if enabled:
            gc.enable()


def _load(path: str) -> Config | None:
    try:
        return load_config(path, deployed=True)
    except ConfigError as exc:
        for problem in exc.problems:
            print(str(problem), file=sys.stderr)
        return None


def deployed_problems(config: Config) -> list[str]:
    """Routes naming a function in neither the config nor the registry (the registry is opened
    only when some route names a function outside the config)."""
    if not config.deployed_refs:
        return []
    from gateway.functions.registry import RegistryError, open_registry

    try:
        registry = open_registry(config.node, config.functions)
    except (RegistryError, OSError) as exc:
        key = config.deployed_refs[0][0]
        return [f"{config.path}: {key}: cannot open the function registry to look the function up: {exc}"]
    try:
        names = [f.name for f in registry.functions()]
    finally:
        registry.close()
    return [str(p) for p in unknown_functions(config, names)]


def cmd_check(args: argparse.Namespace) -> int:
    config = _load(args.config)
    if config is None:
        return EXIT_BAD_CONFIG
    problems = deployed_problems(config)
    for line in problems:
        print(line, file=sys.stderr)
    if problems:
        return EXIT_BAD_CONFIG
    print(
        f"{args.config}: ok ({len(config.routes)} routes, {len(config.origins)} origins, "
        f"{len(config.functions)} functions)"
    )
    return 0


def cmd_routes(args: argparse.Namespace) -> int:
    config = _load(args.config)
    if config is None:
        return EXIT_BAD_CONFIG
    url = urlsplit(args.url if "://" in args.url else "http://" + args.url)
    table = RouteTable.compile(config.routes)
    match = table.match(url.netloc or "localhost", url.path or "/", args.method.upper(), explain=True)
    if match.route is None:
        if match.allowed:
            print(f"405 method not allowed: {args.method.upper()} (allowed: {', '.join(match.allowed)})")
        else:
            print(f"404 no route for {args.method.upper()} {args.url}")
        for reason in match.reasons:
            print(f"  {reason}")
        return 1
    route = match.route
    target = route.function or route.origin or (route.redirect.to if route.redirect else "")
    print(f"route {route.name!r} (routes[{route.index}]) -> {route.target_kind} {target}")
    if match.params:
        print("  params: " + ", ".join(f"{k}={v!r}" for k, v in match.params.items()))
    phases = [
        p
        for p, on in (
            ("auth:" + route.auth.type, route.auth.type != "none"),
            ("cors", route.cors is not None),
            (
                "request_headers",
                bool(
                    route.request_headers.set or route.request_headers.append or route.request_headers.remove
                ),
            ),
            ("rewrite:" + (route.rewrite_path or ""), route.rewrite_path is not None),
            ("edge.viewer:" + str(route.edge.viewer), route.edge.viewer is not None),
            ("cache", route.cache is not None),
            ("edge.origin:" + str(route.edge.origin), route.edge.origin is not None),
            (
                "response_headers",
                bool(
                    route.response_headers.set
                    or route.response_headers.append
                    or route.response_headers.remove
                ),
            ),
        )
        if on
    ]
    print("  phases: " + (" -> ".join([*phases, route.target_kind]) if phases else route.target_kind))
    for reason in match.reasons:
        print(f"  why: {reason}")
    return 0


def environment_problems(config: Config, env: dict[str, str]) -> list[str]:
    """What the config asks of the environment (secrets, key files) and the environment lacks."""
    from gateway.policies.auth import AuthSetupError, build_authenticator

    problems = []
    for route in config.routes:
        try:
            build_authenticator(route.auth, env)
        except AuthSetupError as exc:
            problems.append(f"{config.path}: routes[{route.index}].auth.{exc.key}: {exc.message}")
    return problems


def cmd_serve(args: argparse.Namespace) -> int:
    with collection_paused():
        from gateway.server import configure_logging, serve

        configure_logging(args.log_level)
        config = _load(args.config)
        if config is None:
            return EXIT_BAD_CONFIG
        problems = environment_problems(config, dict(os.environ)) + deployed_problems(config)
        for line in problems:
            print(line, file=sys.stderr)
        if problems:
            return EXIT_BAD_CONFIG
    return serve(config, workers=args.workers, level=args.log_level)


def cmd_build(args: argparse.Namespace) -> int:
    from wasm_runtime.build import build_cli

    return build_cli([args.dir, "-o", args.output, *(["--force"] if args.force else [])])


def parser() -> argparse.ArgumentParser:
    from gateway.admin import commands_cache, commands_fleet, commands_functions, commands_invocations

    p = argparse.ArgumentParser(prog="edgefn", description="Edge function gateway and HTTP router.")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("serve", help="serve a config")
    s.add_argument("--config", required=True)
    s.add_argument("--workers", type=int, default=1)
    s.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    s.set_defaults(func=cmd_serve)

    c = sub.add_parser("check", help="validate a config and exit")
    c.add_argument("--config", required=True)
    c.set_defaults(func=cmd_check)

    r = sub.add_parser("routes", help="say which route a request would take, and why")
    r.add_argument("--config", required=True)
    r.add_argument("method")
    r.add_argument("url")
    r.set_defaults(func=cmd_routes)

    b = sub.add_parser("build", help="build a Python function into a wasi:http/proxy component")
    b.add_argument("dir")
    b.add_argument("-o", "--output", required=True)
    b.add_argument("--force", action="store_true", help="rebuild even when the build cache has it")
    b.set_defaults(func=cmd_build)
    commands_cache.register(sub)
    commands_fleet.register(sub)
    commands_invocations.register(sub)
    commands_functions.register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    with collection_paused():
        args = parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
