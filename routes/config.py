"""The validated, frozen form of `edgefn.toml`.

These objects are built once by `routes.loader.load_config` and never change while a node
serves; everything on the request path reads them without locks. Field names follow the TOML
keys of DESIGN.md so that an error's key path and the attribute agree.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

HttpMethod = str
AuthType = Literal["none", "api_key", "jwt", "sigv4"]
SelectPolicy = Literal["nearest", "weighted", "first-healthy"]
InvokeMode = Literal["BUFFERED", "RESPONSE_STREAM"]


@dataclass(frozen=True, slots=True)
class Region:
    name: str
    latitude: float
    longitude: float


@dataclass(frozen=True, slots=True)
class Node:
    name: str = "edge-1"
    region: str | None = None
    listen: str = "127.0.0.1:8080"
    admin_listen: str = "127.0.0.1:8081"
    data_dir: Path = Path(".edgefn")
    url_domain: str = "fn.localhost"
    trusted_proxies: tuple[str, ...] = ("127.0.0.1/32",)
    geoip_db: Path | None = None
    control_plane: str = "sqlite"
    wasm_threads: int = 512  # guest invocations running at once (a streaming one holds its thread)
    instance_slots: int = 4  # fresh instances made with their memory kept mapped (wasm_runtime/_slots.py)
    max_request_head_bytes: int = 65536  # a request's line and headers past this: 431 (gateway/connection.py)
    request_head_timeout_s: float = 60.0  # a head not complete by then: 408 (gateway/connection.py)


@dataclass(frozen=True, slots=True)
class Endpoint:
    url: str
    region: str | None = None
    weight: float = 1.0


@dataclass(frozen=True, slots=True)
class HealthCheck:
    path: str = "/healthz"
    interval_s: float = 5.0
    timeout_s: float = 1.0
    healthy_threshold: int = 2
    unhealthy_threshold: int = 3


@dataclass(frozen=True, slots=True)
class OriginTimeouts:
    connect_s: float = 2.0
    read_s: float = 30.0


@dataclass(frozen=True, slots=True)
class Origin:
    name: str
    endpoints: tuple[Endpoint, ...]
    select: SelectPolicy = "first-healthy"
    health: HealthCheck | None = None
    timeouts: OriginTimeouts = OriginTimeouts()


@dataclass(frozen=True, slots=True)
class Cors:
    allow_origins: tuple[str, ...] = ()
    allow_methods: tuple[str, ...] = ()
    allow_headers: tuple[str, ...] = ()
    expose_headers: tuple[str, ...] = ()
    max_age: int | None = None
    allow_credentials: bool = False


@dataclass(frozen=True, slots=True)
class Auth:
    """One shape for every auth type; fields that a type does not use keep their defaults."""

    type: AuthType = "none"
    # api_key
    header: str = "x-api-key"
    keys_env: str | None = None
    # jwt
    secret_env: str | None = None
    jwks_file: Path | None = None
    jwks_url: str | None = None
    algorithms: tuple[str, ...] = ()
    issuer: str | None = None
    audience: str | None = None
    leeway_s: float = 0.0
    # sigv4
    credentials_env: str | None = None
    service: str = "lambda"
    region: str | None = None


@dataclass(frozen=True, slots=True)
class AsyncInvoke:
    max_retries: int = 2
    retry_delays_s: tuple[float, ...] = (60.0, 120.0)
    max_event_age_s: float = 21600.0


@dataclass(frozen=True, slots=True)
class FunctionUrl:
    auth: Auth = Auth()
    invoke_mode: InvokeMode = "BUFFERED"
    cors: Cors | None = None


@dataclass(frozen=True, slots=True)
class Function:
    name: str
    component: Path
    memory_mb: int = 128
    timeout_s: float = 10.0
    reserved_concurrency: int = 0
    env: tuple[tuple[str, str], ...] = ()
    outbound: tuple[str, ...] = ()
    instance_reuse: int = 0
    provisioned: int = 0  # instances made ahead of demand (Lambda's provisioned concurrency)
    async_: AsyncInvoke = AsyncInvoke()
    url: FunctionUrl | None = None
    schedule: tuple[str, ...] = ()
    # Not from the file: the component's sha256 as the node process read it before forking its
    # workers (gateway/server.py), so every worker, a replacement too, loads that component.
    sha256: str | None = None


@dataclass(frozen=True, slots=True)
class HeaderRewrite:
    set: tuple[tuple[str, str], ...] = ()
    append: tuple[tuple[str, str], ...] = ()
    remove: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Redirect:
    to: str
    status: int = 308


@dataclass(frozen=True, slots=True)
class CachePolicy:
    ttl_s: float = 60.0
    key: tuple[str, ...] = ()
    max_object_mb: float = 10.0


@dataclass(frozen=True, slots=True)
class EdgeFunctions:
    viewer: str | None = None
    origin: str | None = None


@dataclass(frozen=True, slots=True)
class Route:
    """A route has exactly one target: `function`, `origin` or `redirect`."""

    name: str
    index: int
    host: str = "*"
    path: str = "/{*rest}"
    methods: tuple[HttpMethod, ...] = ()
    function: str | None = None
    origin: str | None = None
    redirect: Redirect | None = None
    rewrite_path: str | None = None
    request_headers: HeaderRewrite = HeaderRewrite()
    response_headers: HeaderRewrite = HeaderRewrite()
    auth: Auth = Auth()
    cors: Cors | None = None
    cache: CachePolicy | None = None
    edge: EdgeFunctions = EdgeFunctions()

    @property
    def target_kind(self) -> Literal["function", "origin", "redirect"]:
        if self.function is not None:
            return "function"
        if self.origin is not None:
            return "origin"
        return "redirect"


@dataclass(frozen=True, slots=True)
class Config:
    path: Path
    node: Node = Node()
    regions: dict[str, Region] = field(default_factory=dict)
    origins: dict[str, Origin] = field(default_factory=dict)
    functions: dict[str, Function] = field(default_factory=dict)
    routes: tuple[Route, ...] = ()
    # (key path, reference) of routes naming a function outside [functions], when loaded with
    # deployed=True; `routes.unknown_functions` checks them against the registry's names.
    deployed_refs: tuple[tuple[str, str], ...] = ()
