"""The gateway's ASGI application: phase 1 (accept) and the sending of what the pipeline answers.

`Gateway` is built from a validated `Config`; everything long-lived (route table, compiled
policies, the shared HTTP client, loaded functions) is made at start-up in `startup()`, and a
request only reads it. The response body is forwarded chunk by chunk as the target yields it;
if a target fails after the status was sent, the connection is aborted so the client sees a
truncated body rather than a complete-looking wrong one.
"""

from __future__ import annotations

import asyncio
import email.utils
import ipaddress
import logging
import os
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import httpx

from edge.geo import CDN_GEO_HEADERS, GeoLocator, viewer_headers
from edge.health import HealthChecker
from edge.node_purges import NodePurges
from edge.origins import OriginPool
from gateway.cache_phase import CachePhase
from gateway.client import ClientConnection
from gateway.context import EdgeRequest, EdgeResponse, RawHeaders, RequestContext, Target
from gateway.edge_functions import EdgeFunction, Trigger
from gateway.errors import error_from, error_response
from gateway.function_urls import FunctionUrls
from gateway.functions.invocations import Invocations
from gateway.functions.node_slots import NodeSlots
from gateway.functions.outbound import GatewayTransport
from gateway.functions.registry import Registry, open_registry
from gateway.functions.registry_sweep import BlobSweeper
from gateway.functions.service import Functions
from gateway.observability import GatewayMetrics, log_access
from gateway.pipeline import Pipeline, RoutePlan, compile_plan
from gateway.proxy import OriginTarget, shared_client
from gateway.request_ids import new_request_id
from gateway.tracing import Tracer
from routes import Config, RouteTable
from wasm_runtime import LastChunk, Runtime

if TYPE_CHECKING:
    from gateway.fleet import GatewayFleet  # loads a Redis client: only for a fleet

log = logging.getLogger("edgefn.gateway")

Scope = dict[str, Any]

# Headers only the gateway may set on the way in: a client's own copies are dropped first.
GATEWAY_OWNED = frozenset(
    {
        b"x-edgefn-node",
        b"x-edgefn-region",
        b"x-edgefn-viewer-country",
        b"x-edgefn-viewer-city",
        b"x-edgefn-viewer-latitude",
        b"x-edgefn-viewer-longitude",
        b"x-edgefn-origin",
    }
)
WATCH_AFTER_S = 0.05  # a body still sending after this long gets a watch on its client
FORWARDING = frozenset({b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host", b"x-request-id"})


class TrustedProxies:
    KNOWN_MAX = 4096  # addresses whose verdict is remembered

    def __init__(self, cidrs: tuple[str, ...]) -> None:
        self.networks = [ipaddress.ip_network(c, strict=False) for c in cidrs]
        # Parsing an address costs more than the rest of the accept phase (6 % of a proxied
        # request's CPU); peers repeat, so verdicts are kept, a bounded number of them.
        self._known: dict[str, bool] = {}

    def __contains__(self, address: str) -> bool:
        known = self._known.get(address)
        if known is not None:
            return known
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        known = any(ip in n for n in self.networks)
        if len(self._known) >= self.KNOWN_MAX:
            self._known.clear()
        self._known[address] = known
        return known

    def client_address(self, peer: str, forwarded_for: list[bytes]) -> str:
        """The rightmost address in X-Forwarded-For that is not a trusted proxy, or the peer."""
        if peer not in self or not forwarded_for:
            return peer
        hops = [h.strip() for v in forwarded_for for h in v.decode("latin-1").split(",") if h.strip()]
        for hop in reversed(hops):
            if hop not in self:
                return hop
        return hops[0] if hops else peer


class Gateway:
    def __init__(
        self,
        config: Config,
        *,
        runtime: Runtime | None = None,
        env: Mapping[str, str] | None = None,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self.config = config
        self.env = dict(os.environ if env is None else env)
        self.trusted = TrustedProxies(config.node.trusted_proxies)
        self.metrics = GatewayMetrics()
        self.http = http or shared_client()
        self.pools = {
            name: OriginPool(origin, config.regions, config.node.region)
            for name, origin in config.origins.items()
        }
        self.geo = GeoLocator(config.node.geoip_db)
        self.health = HealthChecker(self.pools.values(), self.http)
        self.runtime = runtime
        self.registry: Registry | None = None
        self.blob_sweeper: BlobSweeper | None = None  # reclaims code nothing names (registry_sweep.py)
        self.functions: Functions | None = None
        self.function_urls: FunctionUrls | None = None
        self.invocations: Invocations | None = None
        self.fleet: GatewayFleet | None = None  # with control_plane = "redis://..."
        self.node_purges: NodePurges | None = None  # purges to the node's other workers, without a fleet
        self.tracer = Tracer(self.env)
        self.pipeline: Pipeline | None = None
        node = config.node
        self.node_headers: RawHeaders = [(b"x-edgefn-node", node.name.encode())]
        if node.region:
            self.node_headers.append((b"x-edgefn-region", node.region.encode()))
        self.via = f"edgefn-{node.name}"

    async def startup(self) -> None:
        """Load functions and compile every route's plan; nothing here runs per request."""
        if self.config.node.control_plane != "sqlite":
            from gateway.fleet import GatewayFleet

            self.fleet = await GatewayFleet.join(self)
        self.registry = await asyncio.to_thread(open_registry, self.config.node, self.config.functions)
        if self.runtime is None:  # also without config functions: deployed ones need it
            transport = GatewayTransport(self.http, self.pools)
            node = self.config.node
            self.runtime = Runtime(
                node.data_dir,
                transport=transport,
                max_threads=node.wasm_threads,
                instance_slots=node.instance_slots,
            )
        # Always: functions deployed at run time need the queue, the service and their URLs.
        self.invocations = Invocations.for_gateway(self)
        # Reserved concurrency holds across every process of the fleet, or of this node.
        slots = self.fleet.slots if self.fleet else NodeSlots(self.config.node.data_dir / "run" / "slots")
        self.functions = Functions(
            self.config,
            self.runtime,
            self.registry,
            self.invocations.telemetry,
            shared_slots=slots,
        )
        await self.functions.load_all()
        self.functions.on_change(self.invocations.scheduler.poke)
        self.function_urls = FunctionUrls(self.config.node.url_domain, self.functions, self.env, self.http)
        await self.invocations.start()
        self.blob_sweeper = BlobSweeper(self.registry, compiled_dir=self.runtime.compiled_dir)
        self.blob_sweeper.start()
        origin_targets: dict[str, Target] = {
            name: OriginTarget(pool, self.http, via=self.via) for name, pool in self.pools.items()
        }
        plans: dict[str, RoutePlan] = {}
        for route in self.config.routes:
            target: Target | None = None
            if route.origin is not None:
                target = origin_targets[route.origin]
            elif route.function is not None:
                assert self.functions is not None
                target = self.functions.target(route.function)
            plans[route.name] = compile_plan(
                route,
                target,
                self.env,
                self.http,
                viewer=self.edge_function(route.edge.viewer, "viewer"),
                origin_function=self.edge_function(route.edge.origin, "origin"),
            )
        cache = CachePhase.from_env(self.env)
        if self.fleet is None:  # a fleet tells every process, this node's included (gateway/fleet.py)
            self.node_purges = NodePurges(self.config.node.data_dir / "run" / "purge", cache.cache)
            self.node_purges.start()
            cache.peers = self.node_purges
        self.pipeline = Pipeline(RouteTable.compile(self.config.routes), plans, cache)
        await self.health.start()
        log.info(
            "gateway ready: %d routes, %d origins, %d functions",
            len(plans),
            len(self.pools),
            len(self.config.functions),
        )

    def edge_function(self, name: str | None, trigger: Trigger) -> EdgeFunction | None:
        if name is None:
            return None
        assert self.functions is not None and self.runtime is not None
        return EdgeFunction(self.functions.target(name), trigger, self.runtime.transport)

    async def shutdown(self) -> None:
        await self.health.aclose()
        self.geo.close()
        if self.invocations is not None:
            await self.invocations.aclose()
        await asyncio.to_thread(self.tracer.shutdown)
        await self.http.aclose()
        if self.runtime is not None:
            await self.runtime.aclose()
        if self.blob_sweeper is not None:
            await self.blob_sweeper.aclose()
        if self.registry is not None:
            self.registry.close()
        if self.fleet is not None:
            await self.fleet.aclose()
        if self.node_purges is not None:
            self.node_purges.close()

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            await self.serve_http(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self.lifespan(receive, send)

    async def lifespan(self, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as exc:
                    log.exception("start-up failed")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    # phase 1
    def accept(self, scope: Scope, receive: Any) -> tuple[EdgeRequest, RequestContext]:
        peer = scope["client"][0] if scope.get("client") else "0.0.0.0"
        raw: RawHeaders = scope["headers"]
        trusted = peer in self.trusted
        request_id = ""
        host = ""
        headers: RawHeaders = []
        forwarded_for: list[bytes] = []
        cdn_geo: RawHeaders = []
        has_body = False
        for k, v in raw:
            if k == b"host":
                host = v.decode("latin-1")
            elif k == b"content-length":
                has_body = has_body or v != b"0"
            elif k == b"transfer-encoding":
                has_body = True
            if k in GATEWAY_OWNED:
                continue
            if k in CDN_GEO_HEADERS:
                # A CDN's word on where the client is counts only from a trusted proxy.
                if not trusted:
                    continue
                cdn_geo.append((k, v))
            if k in FORWARDING:
                if not trusted:
                    continue
                if k == b"x-request-id":
                    request_id = v.decode("latin-1")[:200]
                    continue
                if k == b"x-forwarded-for":
                    forwarded_for.append(v)
            headers.append((k, v))
        client = self.trusted.client_address(peer, forwarded_for)
        viewer = self.geo.locate(client, cdn_geo)
        headers.extend(viewer_headers(viewer))
        headers.extend(self.node_headers)
        request_id = request_id or new_request_id()
        headers.append((b"x-request-id", request_id.encode()))
        ctx = RequestContext(request_id=request_id)
        ctx.connection = ClientConnection(receive, has_body)
        request = EdgeRequest(
            method=scope["method"],
            scheme=scope.get("scheme", "http"),
            host=host or (scope.get("server") or ("localhost", 0))[0],
            path=scope.get("raw_path", scope["path"].encode()).decode("latin-1").split("?", 1)[0] or "/",
            query=scope.get("query_string", b""),
            headers=headers,
            body=ctx.connection.body(),
            client=client,
            peer=peer,
            request_id=request_id,
            viewer=viewer,
        )
        return request, ctx

    async def serve_http(self, scope: Scope, receive: Any, send: Any) -> None:
        assert self.pipeline is not None, "startup() has not run"
        request, ctx = self.accept(scope, receive)
        span = self.tracer.accept(request.method, request.host, request.path, request.headers)
        self.metrics.in_flight.inc()
        plan: RoutePlan | None = None
        try:
            try:
                plan = await self.function_urls.match(ctx, request) if self.function_urls else None
                plan = plan or self.pipeline.match(ctx, request)
                response = await self.pipeline.policies(plan, ctx, request)
                if response is None and self.invocations is not None:
                    response = await self.invocations.intercept(plan.route.function, request)
                if response is None:
                    response = await self.pipeline.dispatch(plan, request)
            except Exception as exc:
                response = error_response(exc, ctx.request_id)
            ctx.error_code = response.error_code
            response.headers = self.pipeline.response_headers(plan, request, response)
            await self.send_response(ctx, response, send)
        finally:
            self.metrics.in_flight.dec()
            self.metrics.observe(ctx)
            span.end(ctx.status, {"edgefn.route": ctx.route.name if ctx.route else "-"})
            log_access(ctx, request.method, request.host, request.path_with_query, request.client)

    async def send_response(self, ctx: RequestContext, response: EdgeResponse, send: Any) -> None:
        ctx.status = response.status
        headers = [(k, v) for k, v in response.headers if k != b"x-request-id"]
        headers.append((b"x-request-id", ctx.request_id.encode()))
        if not any(k == b"date" for k, _ in headers):
            headers.append((b"date", http_date()))  # an origin's own `date` is passed on as it is
        try:
            await self._send_body(ctx, response, headers, send)
        finally:
            # A body left half-read would keep a function (or an origin connection) waiting.
            aclose = getattr(response.body, "aclose", None)
            if aclose is not None:
                await aclose()

    async def _send_body(
        self, ctx: RequestContext, response: EdgeResponse, headers: RawHeaders, send: Any
    ) -> None:
        await send({"type": "http.response.start", "status": response.status, "headers": headers})
        watch = _ClientWatch(ctx.connection) if ctx.connection is not None else None
        ended = False
        try:
            async for chunk in response.body:
                if chunk:
                    if ended:
                        raise RuntimeError("the body went on after its LastChunk")
                    ctx.bytes_out += len(chunk)
                    # a LastChunk ends the body in the same write (the generator still runs out)
                    ended = type(chunk) is LastChunk
                    await send({"type": "http.response.body", "body": chunk, "more_body": not ended})
        except asyncio.CancelledError:
            if watch is None or not watch.fired:
                raise
            _client_left(ctx)
            return
        except Exception as exc:
            if watch is not None and watch.fired:  # the body's own error, caused by the cancel
                _client_left(ctx)
                return
            error = error_from(exc)
            ctx.error_code = error.code
            log.warning(
                "request %s: body aborted after %d bytes: %s: %s",
                ctx.request_id,
                ctx.bytes_out,
                type(exc).__name__,
                exc,
            )
            return  # uvicorn closes the connection: the client sees the body cut short
        finally:
            if watch is not None:
                watch.stop()
        if not ended:
            await send({"type": "http.response.body", "body": b"", "more_body": False})


def _client_left(ctx: RequestContext) -> None:
    """Stop pulling the body (send_response closes it, which stops the origin read or the guest)
    and serve on: the cancel was ours, not the server's."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        task.uncancel()
    ctx.error_code = "client_closed"
    log.info("request %s: client went away after %d bytes", ctx.request_id, ctx.bytes_out)


class _ClientWatch:
    """Cancels the sending task when the client disconnects while the body is being sent.

    The watch starts only once a body has been sending for WATCH_AFTER_S: most bodies end
    sooner, and a timer costs far less per request than a task.
    """

    def __init__(self, connection: ClientConnection) -> None:
        self.connection = connection
        self.sender = asyncio.current_task()
        self.sending = True
        self.task: asyncio.Task[None] | None = None
        self.timer = asyncio.get_running_loop().call_later(WATCH_AFTER_S, self._start)

    def _start(self) -> None:
        self.task = asyncio.ensure_future(self.connection.gone())
        self.task.add_done_callback(self._gone)

    def _gone(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        error = task.exception()
        if error is not None:
            log.warning("watching the client failed: %s: %s", type(error).__name__, error)
        elif self.sending and self.sender is not None:
            self.sender.cancel()

    @property
    def fired(self) -> bool:
        task = self.task
        return task is not None and task.done() and not task.cancelled() and task.exception() is None

    def stop(self) -> None:
        self.sending = False
        self.timer.cancel()
        if self.task is not None:
            self.task.cancel()


_date: tuple[int, bytes] = (0, b"")


def http_date() -> bytes:
    """The `date` header value, formatted once a second (uvicorn's own is off: it would be a
    second `date` on every proxied response)."""
    global _date
    now = int(time.time())
    if _date[0] != now:
        _date = (now, email.utils.formatdate(now, usegmt=True).encode())
    return _date[1]
