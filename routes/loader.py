"""`edgefn.toml` -> `Config`, validated in one pass that reports every problem.

Sections are read in dependency order (regions, origins, functions, routes, node) so that a
reference can be checked against what exists. A name is registered even when the definition under it
has mistakes, so that one bad function does not also make every route that names it an error.
Relative file paths resolve against the directory of the config file, not the working directory.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from routes import values
from routes.config import (
    AsyncInvoke,
    Auth,
    CachePolicy,
    Config,
    Cors,
    EdgeFunctions,
    Endpoint,
    Function,
    FunctionUrl,
    HeaderRewrite,
    HealthCheck,
    Node,
    Origin,
    OriginTimeouts,
    Redirect,
    Region,
    Route,
)
from routes.errors import ConfigError, ConfigProblem
from routes.patterns import HostPattern, PathPattern, Template
from routes.reader import Missing, Problems, Table, join_key, show, suggest, type_name

_T = TypeVar("_T")
_TOML_POSITION = re.compile(r"^(.*) \(at (line \d+, column \d+|end of document)\)$", re.S)
_AUTH_KEYS = {
    "none": {"type"},
    "api_key": {"type", "header", "keys_env"},
    "jwt": {"type", "secret_env", "jwks_file", "jwks_url", "algorithms", "issuer", "audience", "leeway_s"},
    "sigv4": {"type", "credentials_env", "service", "region"},
}
_ALL_AUTH_KEYS = set().union(*_AUTH_KEYS.values())
_SELECT = ("nearest", "weighted", "first-healthy")
_INVOKE_MODES = ("BUFFERED", "RESPONSE_STREAM")
_REDIRECT_STATUSES = (301, 302, 307, 308)


def load_config(path: str | Path, *, deployed: bool = False) -> Config:
    """Read and validate a config file; raises ConfigError with every problem found.

    With `deployed=True` a route may name a function that is not in `[functions]` (one deployed
    to the registry at run time); such references are kept in `Config.deployed_refs` for
    `unknown_functions` to check against the registry's names, since routes cannot see it."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise ConfigError([ConfigProblem(path, "", f"cannot read the file: {exc.strerror or exc}")]) from None
    except UnicodeDecodeError as exc:
        raise ConfigError([ConfigProblem(path, "", f"not UTF-8 text (byte {exc.start})")]) from None
    return parse_config(text, path, deployed=deployed)


def parse_config(text: str, path: Path, *, deployed: bool = False) -> Config:
    """Validate config text as if it were read from `path` (which need not exist)."""
    path = Path(path)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        m = _TOML_POSITION.match(message)
        where, what = (m.group(2), m.group(1)) if m else ("", message)
        raise ConfigError([ConfigProblem(path, where, f"TOML syntax error: {what}")]) from None
    return config_from_dict(data, path, deployed=deployed)


def config_from_dict(data: dict[str, Any], path: Path, *, deployed: bool = False) -> Config:
    """Validate an already parsed document; the seam for property tests."""
    loader = _Loader(Path(path), deployed)
    config = loader.load(data)
    if loader.problems.items:
        raise ConfigError(loader.problems.items)
    return config


@dataclass
class _Loader:
    path: Path
    deployed: bool = False
    problems: Problems = field(init=False)
    base: Path = field(init=False)
    regions: set[str] = field(default_factory=set)
    regions_ok: bool = True
    origins: set[str] = field(default_factory=set)
    functions: set[str] = field(default_factory=set)
    deployed_refs: list[tuple[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.problems = Problems(self.path)
        self.base = self.path.absolute().parent

    def load(self, data: dict[str, Any]) -> Config:
        root = Table(self.problems, "", data)
        regions_raw = root.data.get("regions")
        if isinstance(regions_raw, dict):
            self.regions = {k for k in regions_raw if isinstance(k, str)}
        regions = self._named(root, "regions", self._region, values.REGION_NAME)
        origins_raw = root.data.get("origins")
        if isinstance(origins_raw, dict):
            self.origins = {k for k in origins_raw if isinstance(k, str)}
        functions_raw = root.data.get("functions")
        if isinstance(functions_raw, dict):
            self.functions = {k for k in functions_raw if isinstance(k, str)}
        origins = self._named(root, "origins", self._origin, values.ORIGIN_NAME)
        functions = self._named(root, "functions", self._function, values.FUNCTION_NAME)
        routes = self._routes(root)
        node = self._node(root.table("node") or Table(self.problems, "node", {}))
        root.finish()
        return Config(
            path=self.path,
            node=node,
            regions=regions,
            origins=origins,
            functions=functions,
            routes=routes,
            deployed_refs=tuple(self.deployed_refs),
        )

    # -- helpers ---------------------------------------------------------------------------------

    def _named(
        self,
        root: Table,
        section: str,
        build: Callable[[Table, str], _T | None],
        name_re: re.Pattern[str],
    ) -> dict[str, _T]:
        """A `[section.NAME]` family of tables, each built by `build(table, name)`."""
        table = root.table(section)
        if table is None:
            if section == "regions" and section in root.data:
                self.regions_ok = False
            return {}
        out: dict[str, _T] = {}
        for name, value in table.data.items():
            table.known.add(name)
            key = table.sub(name)
            if not name_re.fullmatch(name):
                self.problems.add(key, f"{name!r} is not a valid name (letters, digits, '-', '_')")
            sub = Table.of(self.problems, key, value)
            if sub is None:
                continue
            built = build(sub, name)
            sub.finish()
            if built is not None:
                out[name] = built
        return out

    def _file(
        self, t: Table, name: str, default: Path | None, must_exist: bool = False, required: bool = False
    ) -> Path | None:
        value = t.string(name, None, required=required)
        if value is None:
            return default
        try:
            resolved = (self.base / value).resolve()
        except (OSError, ValueError) as exc:
            t.add(name, f"{value!r} is not a usable path ({exc})")
            return default
        if must_exist and not resolved.is_file():
            t.add(name, f"file not found: {resolved}")
        return resolved

    def _choice(self, t: Table, name: str, choices: tuple[Any, ...], default: Any) -> Any:
        value = t.raw(name)
        if isinstance(value, Missing):
            return default
        if value not in choices or type(value) is not type(choices[0]):
            options = ", ".join(str(c) for c in choices)
            hint = suggest(value, [str(c) for c in choices]) if isinstance(value, str) else ""
            t.add(name, f"{show(value)} is not one of {options}{hint}")
            return default
        return value

    def _region_ref(self, t: Table, name: str) -> str | None:
        region = t.string(name, None)
        if region is not None and self.regions_ok and region not in self.regions:
            known = ", ".join(sorted(self.regions)) or "none"
            t.add(
                name, f"{region!r} is not a key of [regions] (known: {known}){suggest(region, self.regions)}"
            )
        return region

    def _pairs(
        self, t: Table, name: str, key_re: re.Pattern[str] | None, what: str
    ) -> tuple[tuple[str, str], ...]:
        """A table of string values (env, header set/append) as a tuple of pairs."""
        sub = t.table(name)
        if sub is None:
            return ()
        out: list[tuple[str, str]] = []
        for key, value in sub.data.items():
            sub.known.add(key)
            if key_re is not None and not key_re.fullmatch(key):
                sub.add(key, f"{key!r} is not a valid {what}")
            elif not isinstance(value, str):
                sub.add(key, f"expected a string, got {type_name(value)} ({show(value)})")
            elif what == "header name" and (problem := values.header_value(value)):
                sub.add(key, problem)
            else:
                out.append((key.lower() if what == "header name" else key, value))
        return tuple(out)

    # -- sections --------------------------------------------------------------------------------

    def _region(self, t: Table, name: str) -> Region | None:
        value = t.raw("location")
        key = t.sub("location")
        if isinstance(value, Missing):
            t.add("location", "is required: [latitude, longitude]")
            return None
        if (
            not isinstance(value, list)
            or len(value) != 2
            or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
        ):
            self.problems.add(key, f"expected [latitude, longitude] (two numbers), got {show(value)}")
            return None
        lat, lon = float(value[0]), float(value[1])
        if not -90 <= lat <= 90:
            self.problems.add(join_key(key, 0), f"latitude {lat:g} is out of range; must be from -90 to 90")
            return None
        if not -180 <= lon <= 180:
            self.problems.add(
                join_key(key, 1), f"longitude {lon:g} is out of range; must be from -180 to 180"
            )
            return None
        return Region(name, lat, lon)

    def _origin(self, t: Table, name: str) -> Origin | None:
        endpoints: list[Endpoint] = []
        raw = t.raw("endpoints")
        if isinstance(raw, Missing):
            t.add("endpoints", "is required: a list of { url = ..., region = ... }")
        elif not isinstance(raw, list) or not raw:
            t.add("endpoints", f"expected a non-empty array of endpoints, got {show(raw)}")
        else:
            for i, item in enumerate(raw):
                endpoint = self._endpoint(join_key(t.sub("endpoints"), i), item)
                if endpoint is not None:
                    endpoints.append(endpoint)
        select = self._choice(t, "select", _SELECT, "first-healthy")
        if select == "weighted" and endpoints and all(e.weight == 0 for e in endpoints):
            t.add("endpoints", "select = 'weighted' needs at least one endpoint with weight > 0")
        health = None
        ht = t.table("health")
        if ht is not None:
            health = HealthCheck(
                path=ht.string("path", "/healthz"),
                interval_s=ht.number("interval_s", 5.0, positive=True),
                timeout_s=ht.number("timeout_s", 1.0, positive=True),
                healthy_threshold=ht.integer("healthy_threshold", 2, minimum=1, maximum=100),
                unhealthy_threshold=ht.integer("unhealthy_threshold", 3, minimum=1, maximum=100),
            )
            if not health.path.startswith("/"):
                ht.add("path", f"{health.path!r} must start with '/'")
            if health.timeout_s > health.interval_s:
                ht.add(
                    "timeout_s", f"{health.timeout_s:g} s is longer than interval_s ({health.interval_s:g} s)"
                )
            ht.finish()
        timeouts = OriginTimeouts()
        tt = t.table("timeouts")
        if tt is not None:
            timeouts = OriginTimeouts(
                connect_s=tt.number("connect_s", 2.0, positive=True),
                read_s=tt.number("read_s", 30.0, positive=True),
            )
            tt.finish()
        return Origin(name, tuple(endpoints), select, health, timeouts)

    def _endpoint(self, key: str, item: object) -> Endpoint | None:
        if isinstance(item, str):
            item = {"url": item}
        t = Table.of(self.problems, key, item)
        if t is None:
            return None
        url = t.string("url", None, required=True)
        region = self._region_ref(t, "region")
        weight = t.number("weight", 1.0, minimum=0)
        t.finish()
        if url is None:
            return None
        if problem := values.http_url(url):
            t.add("url", problem)
        return Endpoint(url, region, weight)

    def _function(self, t: Table, name: str) -> Function | None:
        component = self._file(t, "component", None, must_exist=True, required=True)
        env = self._pairs(t, "env", values.ENV_NAME, "environment variable name")
        outbound = t.strings("outbound")
        for i, target in enumerate(outbound):
            if target not in self.origins and not values.host_port(target):
                self.problems.add(
                    join_key(t.sub("outbound"), i),
                    f"{target!r} is neither a configured origin nor host:port{suggest(target, self.origins)}",
                )
        async_ = AsyncInvoke()
        at = t.table("async")
        if at is not None:
            delays_raw = at.raw("retry_delays_s")
            delays = self._delays(at, delays_raw)
            async_ = AsyncInvoke(
                max_retries=at.integer("max_retries", 2, minimum=0, maximum=10),
                retry_delays_s=delays,
                max_event_age_s=at.number("max_event_age_s", 21600.0, minimum=60, maximum=21600),
            )
            at.finish()
        url = None
        ut = t.table("url")
        if ut is not None:
            url = self._function_url(ut)
        schedules = self._schedules(t)
        instance_reuse = t.integer("instance_reuse", 0, minimum=0)
        provisioned = t.integer("provisioned", 0, minimum=0, maximum=1000)
        if provisioned and not instance_reuse:
            t.add("provisioned", "needs instance_reuse of 1 or more")
        function = Function(
            name=name,
            component=component if component is not None else Path(),
            memory_mb=t.integer("memory_mb", 128, minimum=1, maximum=4096),
            timeout_s=t.number("timeout_s", 10.0, positive=True, maximum=900),
            reserved_concurrency=t.integer("reserved_concurrency", 0, minimum=0, maximum=100_000),
            env=env,
            outbound=outbound,
            instance_reuse=instance_reuse,
            provisioned=provisioned,
            async_=async_,
            url=url,
            schedule=schedules,
        )
        return function

    def _function_url(self, ut: Table) -> FunctionUrl:
        auth = self._auth(ut, "auth")
        url = FunctionUrl(
            auth=auth if auth is not None else Auth(),
            invoke_mode=self._choice(ut, "invoke_mode", _INVOKE_MODES, "BUFFERED"),
            cors=self._cors(ut, "cors"),
        )
        ut.finish()
        return url

    def _delays(self, t: Table, raw: object) -> tuple[float, ...]:
        if isinstance(raw, Missing):
            return AsyncInvoke().retry_delays_s
        if not isinstance(raw, list):
            t.add("retry_delays_s", f"expected an array of numbers, got {type_name(raw)} ({show(raw)})")
            return AsyncInvoke().retry_delays_s
        out: list[float] = []
        for i, item in enumerate(raw):
            if isinstance(item, int | float) and not isinstance(item, bool) and 0 <= item <= 21600:
                out.append(float(item))
            else:
                self.problems.add(
                    join_key(t.sub("retry_delays_s"), i),
                    f"{show(item)} is not a number of seconds from 0 to 21600",
                )
        return tuple(out)

    def _schedules(self, t: Table) -> tuple[str, ...]:
        raw = t.raw("schedule")
        if isinstance(raw, Missing):
            return ()
        items = [raw] if isinstance(raw, str) else raw
        if not isinstance(items, list):
            t.add("schedule", f"expected a string or an array of strings, got {type_name(raw)} ({show(raw)})")
            return ()
        out: list[str] = []
        for i, item in enumerate(items):
            key = t.sub("schedule") if isinstance(raw, str) else join_key(t.sub("schedule"), i)
            problem = (
                values.schedule(item)
                if isinstance(item, str)
                else f"expected a string, got {type_name(item)}"
            )
            if problem:
                self.problems.add(key, problem)
            else:
                out.append(item)
        return tuple(out)

    def _auth(self, parent: Table, name: str) -> Auth | None:
        raw = parent.raw(name)
        if isinstance(raw, Missing):
            return None
        if isinstance(raw, str):
            raw = {"type": raw}
        t = Table.of(self.problems, parent.sub(name), raw)
        if t is None:
            return None
        kind = t.raw("type")
        if isinstance(kind, Missing):
            t.add("type", f"is required: one of {', '.join(_AUTH_KEYS)}")
            return None
        if not isinstance(kind, str) or kind not in _AUTH_KEYS:
            hint = suggest(kind, _AUTH_KEYS) if isinstance(kind, str) else ""
            t.add("type", f"{show(kind)} is not one of {', '.join(_AUTH_KEYS)}{hint}")
            return None
        for key in t.data:
            if key in _ALL_AUTH_KEYS and key not in _AUTH_KEYS[kind]:
                t.add(key, f"is not used by auth type {kind!r}")
        if kind == "none":
            t.finish(_ALL_AUTH_KEYS)
            return Auth()
        if kind == "api_key":
            header = t.string("header", "x-api-key")
            if not values.TOKEN.fullmatch(header):
                t.add("header", f"{header!r} is not a valid header name")
            auth = Auth(type="api_key", header=header.lower(), keys_env=self._env_name(t, "keys_env", True))
        elif kind == "sigv4":
            auth = Auth(
                type="sigv4",
                credentials_env=self._env_name(t, "credentials_env", True),
                service=t.string("service", "lambda"),
                region=t.string("region", None),
            )
        else:
            auth = self._jwt(t)
        t.finish(_ALL_AUTH_KEYS)
        return auth

    def _env_name(self, t: Table, name: str, required: bool) -> str | None:
        value = t.string(name, None, required=required)
        if value is not None and not values.ENV_NAME.fullmatch(value):
            t.add(name, f"{value!r} is not an environment variable name")
        return value

    def _jwt(self, t: Table) -> Auth:
        secret_env = self._env_name(t, "secret_env", False)
        jwks_file = self._file(t, "jwks_file", None, must_exist=True)
        jwks_url = t.string("jwks_url", None)
        if jwks_url is not None and (problem := values.http_url(jwks_url)):
            t.add("jwks_url", problem)
        sources = [k for k in ("secret_env", "jwks_file", "jwks_url") if k in t.data]
        if len(sources) != 1:
            found = f"got {' and '.join(sources)}" if sources else "got none"
            self.problems.add(
                t.key, f"jwt auth needs exactly one of secret_env, jwks_file, jwks_url ({found})"
            )
        algorithms = t.strings("algorithms")
        key = t.sub("algorithms")
        if "algorithms" not in t.data:
            t.add("algorithms", f"is required: a non-empty list from {', '.join(values.JWT_ALGORITHMS)}")
        elif not algorithms and not t.data["algorithms"]:
            t.add("algorithms", f"must not be empty; use some of {', '.join(values.JWT_ALGORITHMS)}")
        for alg in algorithms:
            if alg.lower() == "none":
                self.problems.add(
                    key, f"'none' is not allowed; use one of {', '.join(values.JWT_ALGORITHMS)}"
                )
            elif alg not in values.JWT_ALGORITHMS:
                hint = suggest(alg, values.JWT_ALGORITHMS)
                self.problems.add(
                    key, f"{alg!r} is not supported; use one of {', '.join(values.JWT_ALGORITHMS)}{hint}"
                )
        hmac = [a for a in algorithms if a.startswith("HS")]
        public = [a for a in algorithms if a in values.JWT_ALGORITHMS and not a.startswith("HS")]
        if len(sources) == 1 and hmac and ("jwks_file" in t.data or "jwks_url" in t.data):
            self.problems.add(
                key,
                f"{', '.join(hmac)} cannot be used with a JWKS key source "
                "(a public key would become an HMAC secret)",
            )
        if len(sources) == 1 and public and "secret_env" in t.data:
            self.problems.add(
                key, f"{', '.join(public)} need a public key: use jwks_file or jwks_url, not secret_env"
            )
        audience = t.string("audience", None)
        return Auth(
            type="jwt",
            secret_env=secret_env,
            jwks_file=jwks_file,
            jwks_url=jwks_url,
            algorithms=tuple(dict.fromkeys(algorithms)),
            issuer=t.string("issuer", None),
            audience=audience,
            leeway_s=t.number("leeway_s", 0.0, minimum=0, maximum=3600),
        )

    def _cors(self, parent: Table, name: str) -> Cors | None:
        t = parent.table(name)
        if t is None:
            return None
        origins = t.strings("allow_origins")
        for i, origin in enumerate(origins):
            if problem := values.cors_origin(origin):
                self.problems.add(join_key(t.sub("allow_origins"), i), problem)
        methods = self._tokens(t, "allow_methods", upper=True)
        cors = Cors(
            allow_origins=origins,
            allow_methods=methods,
            allow_headers=self._tokens(t, "allow_headers", upper=False),
            expose_headers=self._tokens(t, "expose_headers", upper=False),
            max_age=t.integer("max_age", None, minimum=0, maximum=86400 * 7),
            allow_credentials=t.boolean("allow_credentials", False),
        )
        if cors.allow_credentials and "*" in origins:
            t.add(
                "allow_origins",
                "'*' cannot be used with allow_credentials = true (browsers refuse it); list the origins",
            )
        t.finish()
        return cors

    def _tokens(self, t: Table, name: str, upper: bool) -> tuple[str, ...]:
        """Methods or header names: RFC 9110 tokens, or `*`."""
        out: list[str] = []
        for i, item in enumerate(t.strings(name)):
            if item != "*" and not values.TOKEN.fullmatch(item):
                self.problems.add(join_key(t.sub(name), i), f"{item!r} is not a valid HTTP token")
            else:
                out.append(item.upper() if upper else item.lower())
        return tuple(dict.fromkeys(out))

    def _headers(self, parent: Table, name: str) -> HeaderRewrite:
        t = parent.table(name)
        if t is None:
            return HeaderRewrite()
        rewrite = HeaderRewrite(
            set=self._pairs(t, "set", values.TOKEN, "header name"),
            append=self._pairs(t, "append", values.TOKEN, "header name"),
            remove=self._tokens(t, "remove", upper=False),
        )
        t.finish()
        return rewrite

    def _routes(self, root: Table) -> tuple[Route, ...]:
        raw = root.raw("routes")
        if isinstance(raw, Missing):
            return ()
        if not isinstance(raw, list):
            root.add("routes", f"expected an array of tables ([[routes]]), got {type_name(raw)}")
            return ()
        routes: list[Route] = []
        seen: dict[str, int] = {}
        shapes: list[tuple[int, tuple[Any, ...], frozenset[str] | None]] = []
        for i, item in enumerate(raw):
            t = Table.of(self.problems, join_key("routes", i), item)
            if t is None:
                continue
            route, shape = self._route(t, i)
            t.finish()
            if route is None:
                continue
            if route.name in seen:
                t.add(
                    "name", f"duplicate route name {route.name!r} (first used by routes[{seen[route.name]}])"
                )
            else:
                seen[route.name] = i
            if shape is not None:
                methods = frozenset(route.methods) if route.methods else None
                for j, other_shape, other_methods in shapes:
                    if other_shape == shape and (
                        other_methods is None or (methods is not None and methods <= other_methods)
                    ):
                        self.problems.add(
                            t.key,
                            f"unreachable: routes[{j}] has the same host and path "
                            "and accepts every method this one does",
                        )
                        break
                shapes.append((i, shape, methods))
            routes.append(route)
        return tuple(routes)

    def _route(self, t: Table, index: int) -> tuple[Route | None, tuple[Any, ...] | None]:
        name = t.string("name", f"route-{index}")
        if not values.ROUTE_NAME.fullmatch(name):
            t.add("name", f"{name!r} is not a valid route name (letters, digits, '-', '_', '.', ':')")
        host_text = t.string("host", "*")
        host: HostPattern | None = None
        try:
            host = HostPattern.parse(host_text)
        except ValueError as exc:
            t.add("host", str(exc))
        path_text = t.string("path", "/{*rest}")
        path: PathPattern | None = None
        try:
            path = PathPattern.parse(path_text)
        except ValueError as exc:
            t.add("path", str(exc))
        methods: tuple[str, ...] = ()
        if not isinstance(t.raw("methods"), Missing):
            methods = self._tokens(t, "methods", upper=True)
            if "*" in methods:
                t.add("methods", "'*' is not a method; omit methods to allow every method")
            elif isinstance(t.data["methods"], list) and not t.data["methods"]:
                t.add("methods", "an empty list allows nothing; omit methods to allow every method")
        targets = [k for k in ("function", "origin", "redirect") if k in t.data]
        if not targets:
            self.problems.add(t.key, "a route needs exactly one target: function, origin or redirect")
        elif len(targets) > 1:
            self.problems.add(t.key, f"a route has exactly one target, got {' and '.join(targets)}")
        function = t.string("function", None)
        if function is not None:
            self._function_ref(t, "function", function)
        origin = t.string("origin", None)
        if origin is not None and origin not in self.origins:
            known = ", ".join(sorted(self.origins)) or "none"
            t.add(
                "origin",
                f"origin {origin!r} is not configured (configured: {known}){suggest(origin, self.origins)}",
            )
        redirect = self._redirect(t, path)
        rewrite_path = None
        rt = t.table("rewrite")
        if rt is not None:
            rewrite_path = rt.string("path", None, required=True)
            if rewrite_path is not None:
                if not rewrite_path.startswith("/"):
                    rt.add("path", f"{rewrite_path!r} must start with '/'")
                self._template(rt, "path", rewrite_path, path)
            rt.finish()
            if "redirect" in t.data:
                t.add("rewrite", "has no effect on a redirect route; put the path in redirect.to")
        cache = None
        ct = t.table("cache")
        if ct is not None:
            cache = CachePolicy(
                ttl_s=ct.number("ttl_s", 60.0, minimum=0, maximum=365 * 86400),
                key=ct.strings("key"),
                max_object_mb=ct.number("max_object_mb", 10.0, positive=True, maximum=10240),
            )
            ct.finish()
        edge = EdgeFunctions()
        et = t.table("edge")
        if et is not None:
            viewer, origin_fn = et.string("viewer", None), et.string("origin", None)
            for key, ref in (("viewer", viewer), ("origin", origin_fn)):
                if ref is not None:
                    self._function_ref(et, key, ref)
            edge = EdgeFunctions(viewer, origin_fn)
            et.finish()
        auth = self._auth(t, "auth")
        route = Route(
            name=name,
            index=index,
            host=host_text,
            path=path_text,
            methods=methods,
            function=function,
            origin=origin,
            redirect=redirect,
            rewrite_path=rewrite_path,
            request_headers=self._headers(t, "request_headers"),
            response_headers=self._headers(t, "response_headers"),
            auth=auth if auth is not None else Auth(),
            cors=self._cors(t, "cors"),
            cache=cache,
            edge=edge,
        )
        shape = None
        if host is not None and path is not None:
            shape = (host.kind, host.value, tuple((k, v if k == 0 else "") for k, v in path.segments))
        return route, shape

    def _function_ref(self, t: Table, key: str, ref: str) -> None:
        if problem := values.function_qualifier(ref):
            t.add(key, problem)
        elif self.deployed and ref.partition(":")[0] not in self.functions:
            self.deployed_refs.append((t.sub(key), ref))
        elif problem := values.function_known(ref.partition(":")[0], self.functions):
            t.add(key, problem)

    def _redirect(self, t: Table, path: PathPattern | None) -> Redirect | None:
        rt = t.table("redirect")
        if rt is None:
            return None
        to = rt.string("to", None, required=True)
        status = self._choice(rt, "status", _REDIRECT_STATUSES, 308)
        rt.finish()
        if to is None:
            return None
        if not (to.startswith("/") and not to.startswith("//")) and not to.startswith(
            ("http://", "https://")
        ):
            rt.add("to", f"{to!r} must be an absolute http(s) URL or a path starting with '/'")
        self._template(rt, "to", to, path)
        return Redirect(to, status)

    def _template(self, t: Table, name: str, text: str, path: PathPattern | None) -> None:
        try:
            template = Template.parse(text, path.tail if path else None)
        except ValueError as exc:
            t.add(name, str(exc))
            return
        if path is None:
            return
        for param in template.names:
            if param not in path.names:
                captured = ", ".join(path.names) or "nothing"
                t.add(name, f"{{{param}}} is not captured by path {path.text!r} (it captures {captured})")

    def _node(self, t: Table) -> Node:
        listen = t.string("listen", "127.0.0.1:8080")
        if problem := values.address(listen):
            t.add("listen", problem)
        admin_listen = t.string("admin_listen", "127.0.0.1:8081")
        if problem := values.address(admin_listen):
            t.add("admin_listen", problem)
        url_domain = t.string("url_domain", "fn.localhost")
        try:
            if HostPattern.parse(url_domain).kind != "exact":
                t.add("url_domain", f"{url_domain!r} must be a plain domain, without '*'")
        except ValueError as exc:
            t.add("url_domain", str(exc))
        proxies = t.strings("trusted_proxies", ("127.0.0.1/32",))
        for i, proxy in enumerate(proxies):
            if problem := values.cidr(proxy):
                self.problems.add(join_key(t.sub("trusted_proxies"), i), problem)
        control_plane = t.string("control_plane", "sqlite")
        if control_plane != "sqlite":
            if not control_plane.startswith(("redis://", "rediss://")):
                t.add("control_plane", f"{control_plane!r} is neither 'sqlite' nor a redis:// URL")
            elif not control_plane.split("://", 1)[1].split("/", 1)[0]:
                t.add("control_plane", f"{control_plane!r}: the redis URL has no host")
        data_dir = self._file(t, "data_dir", None)
        node = Node(
            name=t.string("name", "edge-1"),
            region=self._region_ref(t, "region"),
            listen=listen,
            admin_listen=admin_listen,
            data_dir=data_dir if data_dir is not None else (self.base / ".edgefn").resolve(),
            url_domain=url_domain.lower(),
            trusted_proxies=proxies,
            geoip_db=self._file(t, "geoip_db", None),
            control_plane=control_plane,
            wasm_threads=t.integer("wasm_threads", 512, minimum=1, maximum=65536),
            instance_slots=t.integer("instance_slots", 4, minimum=0, maximum=256),
            max_request_head_bytes=t.integer("max_request_head_bytes", 65536, minimum=1024, maximum=1 << 20),
            request_head_timeout_s=t.number("request_head_timeout_s", 60.0, minimum=0.1, maximum=3600),
        )
        t.finish()
        return node


def function_url_from_dict(data: dict[str, Any], source: Path) -> FunctionUrl:
    """A Function URL's `auth`, `invoke_mode` and `cors` given at run time (the admin API), checked
    by the same rules as a `url = {...}` table; `source` names where it came from in errors."""
    loader = _Loader(Path(source))
    url = loader._function_url(Table(loader.problems, "", data))
    if loader.problems.items:
        raise ConfigError(loader.problems.items)
    return url


def unknown_functions(config: Config, deployed: Iterable[str]) -> list[ConfigProblem]:
    """What `load_config(..., deployed=True)` left open: references to functions neither in the
    config nor among `deployed` (the registry's names), as the loader would have reported them."""
    names = set(deployed)
    problems = []
    for key, ref in config.deployed_refs:
        if problem := values.function_known(ref.partition(":")[0], set(config.functions), names):
            problems.append(ConfigProblem(config.path, key, problem))
    return problems
