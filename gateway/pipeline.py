"""The request lifecycle of DESIGN.md as named phases, one request at a time.

    accept -> match -> policies (auth, CORS preflight, rewrites) -> viewer function -> cache
           -> origin function -> target -> response phase -> log

Each route is compiled once into a `RoutePlan` holding its policies and target; per-request state
lives in a `RequestContext`. Phases either continue or answer: an answer is a response or a
`GatewayError`, which `gateway.app` turns into the JSON error of DESIGN.md.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass

from gateway.cache_phase import CachePhase
from gateway.context import EdgeRequest, EdgeResponse, RawHeaders, RequestContext, Target, single_chunk
from gateway.edge_functions import Downstream, EdgeFunction
from gateway.errors import MethodNotAllowed, NoRoute, PayloadTooLarge, error_from, error_response
from gateway.policies.auth import (
    Authenticator,
    AuthFailure,
    AuthRequest,
    build_authenticator,
    checked_body,
)
from gateway.policies.cors import CorsPolicy
from gateway.policies.headers import HeaderRewriter
from routes import Route, RouteTable

# Lambda's synchronous payload limit; a body that a phase must read whole (SigV4 without a
# declared payload hash) may not be larger.
MAX_BUFFERED_BODY = 6 * 1024 * 1024
PREFLIGHT = "cors-preflight"


@dataclass
class RoutePlan:
    route: Route
    target: Target | None
    authenticator: Authenticator | None
    cors: CorsPolicy | None
    request_headers: HeaderRewriter
    response_headers: HeaderRewriter
    viewer: EdgeFunction | None = None
    origin_function: EdgeFunction | None = None


def compile_plan(
    route: Route,
    target: Target | None,
    env: Mapping[str, str],
    http: object | None = None,
    *,
    viewer: EdgeFunction | None = None,
    origin_function: EdgeFunction | None = None,
) -> RoutePlan:
    return RoutePlan(
        route=route,
        target=target,
        authenticator=None if route.auth.type == "none" else build_authenticator(route.auth, env, http),  # type: ignore[arg-type]
        cors=CorsPolicy(route.cors) if route.cors is not None else None,
        request_headers=HeaderRewriter(route.request_headers),
        response_headers=HeaderRewriter(route.response_headers),
        viewer=viewer,
        origin_function=origin_function,
    )


class Pipeline:
    def __init__(
        self, table: RouteTable, plans: dict[str, RoutePlan], cache: CachePhase | None = None
    ) -> None:
        self.table = table
        self.plans = plans
        self.cache = cache if cache is not None else CachePhase.from_env()
        for plan in plans.values():
            if plan.route.cache is not None:
                self.cache.compile(plan.route)  # a bad cache.key fails start-up, not a request

    # phase 2
    def match(self, ctx: RequestContext, request: EdgeRequest) -> RoutePlan:
        host = request.host
        found = self.table.match(host, request.path, request.method)
        if found.route is None:
            if found.allowed:
                raise MethodNotAllowed(f"{request.method} is not allowed here", found.allowed)
            raise NoRoute(f"no route for {request.method} {host}{request.path}")
        ctx.route = found.route
        ctx.match = found
        plan = self.plans[found.route.name]
        ctx.target = (
            found.route.target_kind + ":" + (found.route.function or found.route.origin or "redirect")
        )
        return plan

    # phase 3: auth, then the CORS preflight, then rewrites. A preflight carries no credentials
    # (browsers never send them), so it is answered before auth, as Lambda Function URLs do.
    async def policies(
        self, plan: RoutePlan, ctx: RequestContext, request: EdgeRequest
    ) -> EdgeResponse | None:
        if plan.cors is not None:
            view = request.header_view()
            if plan.cors.is_preflight(request.method, view):
                status, headers = plan.cors.preflight(view)
                return EdgeResponse(status=status, headers=_encode(headers), served_by=PREFLIGHT)
        if plan.authenticator is not None:
            await self.authenticate(plan.authenticator, request)
        request.headers = plan.request_headers.apply(request.headers)
        location = ctx.match.redirect_location() if ctx.match else None
        if location is not None:
            if request.query:
                location += ("&" if "?" in location else "?") + request.query.decode("latin-1")
            status = plan.route.redirect.status if plan.route.redirect else 308
            return EdgeResponse(
                status=status, headers=[(b"location", location.encode())], served_by="redirect"
            )
        rewritten = ctx.match.rewritten_path() if ctx.match else None
        if rewritten is not None:
            request.path = rewritten
        return None

    # phases 4-7: viewer function, edge cache, origin function, target. An edge function that
    # forwards its request gets the rest of the chain's answer, errors included, as a response.
    async def dispatch(self, plan: RoutePlan, request: EdgeRequest) -> EdgeResponse:
        if plan.viewer is not None:
            return await plan.viewer.run(request, _answering(lambda r: self.from_cache(plan, r)))
        return await self.from_cache(plan, request)

    async def from_cache(self, plan: RoutePlan, request: EdgeRequest) -> EdgeResponse:
        if plan.route.cache is not None:
            return await self.cache.serve(plan.route, request, lambda r: self.to_origin(plan, r))
        return await self.to_origin(plan, request)

    async def to_origin(self, plan: RoutePlan, request: EdgeRequest) -> EdgeResponse:
        assert plan.target is not None
        if plan.origin_function is not None:
            return await plan.origin_function.run(request, _answering(plan.target.handle))
        return await plan.target.handle(request)

    async def authenticate(self, authenticator: Authenticator, request: EdgeRequest) -> None:
        headers = request.header_view()
        body: bytes | None = None
        if authenticator.needs_body and "x-amz-content-sha256" not in headers:
            body = await read_bounded(
                request.body, MAX_BUFFERED_BODY, "request body over {limit} bytes cannot be authenticated"
            )
            request.body = single_chunk(body)
        try:
            principal = await authenticator.authenticate(
                AuthRequest(
                    method=request.method,
                    path=request.path,
                    query_string=request.query.decode("latin-1"),
                    headers=headers,
                    body=body,
                )
            )
        except AuthFailure as failure:
            raise error_from(failure) from failure
        signed_hash = principal.claims.get("payload_sha256") if principal.kind == "sigv4" else None
        if body is None and signed_hash is not None:
            # The signature covers the declared hash; the body itself is checked as it streams.
            request.body = checked_body(request.body, signed_hash)

    # phase 8 (headers part): rewrite, then CORS on the way out
    def response_headers(
        self, plan: RoutePlan | None, request: EdgeRequest, response: EdgeResponse
    ) -> RawHeaders:
        if plan is None:
            return response.headers
        headers = plan.response_headers.apply(response.headers)
        if plan.cors is not None and response.served_by != PREFLIGHT:
            extra = plan.cors.response_headers(request.header_view())
            if plan.cors.vary_origin and not any(k.lower() == "vary" for k, _ in extra):
                extra.append(("vary", "origin"))
            headers = merge_cors(headers, extra)
        return headers


def _answering(phase: Callable[[EdgeRequest], Awaitable[EdgeResponse]]) -> Downstream:
    async def run(request: EdgeRequest) -> EdgeResponse:
        try:
            return await phase(request)
        except Exception as exc:
            return error_response(exc, request.request_id)

    return run


def merge_cors(headers: RawHeaders, extra: list[tuple[str, str]]) -> RawHeaders:
    """Add CORS headers, replacing any the target set and folding `vary` into one value."""
    names = {k.lower().encode() for k, _ in extra}
    vary_extra = [v for k, v in extra if k.lower() == "vary"]
    kept = [(k, v) for k, v in headers if k not in names or k == b"vary"]
    kept.extend((k.lower().encode(), v.encode("latin-1")) for k, v in extra if k.lower() != "vary")
    if vary_extra:
        existing = [t.strip() for k, v in kept if k == b"vary" for t in v.decode("latin-1").split(",")]
        merged = list({t.lower(): t for t in reversed([t for t in existing if t] + vary_extra)}.values())[
            ::-1
        ]
        kept = [(k, v) for k, v in kept if k != b"vary"]
        kept.append((b"vary", ", ".join(merged).encode("latin-1")))
    return kept


async def read_bounded(body: AsyncIterator[bytes], limit: int, refusal: str) -> bytes:
    """Read a whole body a phase must see at once; past `limit` the request is refused (413)."""
    parts: list[bytes] = []
    size = 0
    async for chunk in body:
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(refusal.format(limit=limit))
        parts.append(chunk)
    return b"".join(parts)


def _encode(headers: list[tuple[str, str]]) -> RawHeaders:
    return [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers]
