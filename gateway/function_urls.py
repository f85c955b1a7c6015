"""Function URLs: `http://<url_id>.<url_domain>[:port]/` serves one function, before any route.

Each URL of the registry becomes a `RoutePlan` of its own (a route that matches only its host,
with the URL's `auth` and `cors`), so a URL request goes through the same phases as a routed one:
CORS preflight, auth (none or sigv4), Event/DryRun interception, the function, CORS headers on the
way out, the access log. The table is rebuilt when the registry's revision moves, so a URL created
or deleted on any process is served (or 404) without a restart.

Invoke modes, as Lambda: `BUFFERED` reads the whole response before sending it and answers 502
past 6 MB; `RESPONSE_STREAM` streams it with no cap. Every host under `url_domain` is URL
territory: an unknown url-id is a 404, it does not fall through to the routes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping

from gateway.context import EdgeRequest, EdgeResponse, RequestContext, Target, single_chunk
from gateway.errors import GatewayError, PayloadTooLarge, UpstreamError
from gateway.functions.registry import UrlInfo
from gateway.functions.service import Functions
from gateway.pipeline import MAX_BUFFERED_BODY, RoutePlan, compile_plan, read_bounded
from gateway.policies.auth import AuthSetupError
from routes import Route

log = logging.getLogger("edgefn.function_urls")

FRAMING = (b"content-length", b"transfer-encoding")


class UnknownUrl(GatewayError):
    status, code = 404, "function_url_not_found"


class UrlMisconfigured(GatewayError):
    status, code = 500, "function_url_misconfigured"


class BufferedTarget:
    """BUFFERED invoke mode: the whole response is read, then sent with its length; past
    `limit` bytes the function's answer is dropped and the client gets a 502 (Lambda's 6 MB)."""

    def __init__(self, inner: Target, limit: int = MAX_BUFFERED_BODY) -> None:
        self.inner = inner
        self.limit = limit

    async def handle(self, request: EdgeRequest) -> EdgeResponse:
        response = await self.inner.handle(request)
        try:
            body = await read_bounded(response.body, self.limit, "")
        except PayloadTooLarge as exc:
            raise UpstreamError(
                f"the function's response is over {self.limit} bytes, the limit of a BUFFERED "
                "Function URL (as Lambda); use invoke_mode RESPONSE_STREAM for larger responses",
                code="response_too_large",
            ) from exc
        finally:
            aclose = getattr(response.body, "aclose", None)
            if aclose is not None:
                await aclose()
        headers = [(k, v) for k, v in response.headers if k not in FRAMING]
        headers.append((b"content-length", str(len(body)).encode()))
        return EdgeResponse(response.status, headers, single_chunk(body), served_by=response.served_by)


class FunctionUrls:
    def __init__(self, domain: str, functions: Functions, env: Mapping[str, str], http: object) -> None:
        self.suffix = "." + domain.lower().rstrip(".")
        self.functions = functions
        self.env = env
        self.http = http
        self.revision: int | None = None
        self.urls: dict[str, UrlInfo] = {}
        self.plans: dict[str, RoutePlan | UrlMisconfigured] = {}

    def url_id(self, host: str) -> str | None:
        """The url-id if `host` (port allowed) is under the URL domain, else None."""
        name, sep, port = host.lower().rpartition(":")
        if not sep or not port.isdigit():
            name = host.lower()
        name = name.rstrip(".")
        if not name.endswith(self.suffix):
            return None
        return name[: -len(self.suffix)]

    async def match(self, ctx: RequestContext, request: EdgeRequest) -> RoutePlan | None:
        """The URL's plan for a request to the URL domain; None for any other host."""
        url_id = self.url_id(request.host)
        if url_id is None:
            return None
        await self.functions.refresh()
        if self.revision != self.functions.revision:
            await self.reload()
        plan = self.plans.get(url_id)
        if plan is None:
            raise UnknownUrl(f"no Function URL {url_id!r} on this node")
        if isinstance(plan, UrlMisconfigured):
            raise plan
        ctx.route = plan.route
        ctx.target = "function-url:" + (plan.route.function or "")
        return plan

    async def reload(self) -> None:
        revision = self.functions.revision
        urls = await asyncio.to_thread(self.functions.registry.urls)
        plans: dict[str, RoutePlan | UrlMisconfigured] = {}
        for url in urls:
            old = self.plans.get(url.url_id)
            unchanged = old is not None and self.urls.get(url.url_id) == url
            plans[url.url_id] = old if old is not None and unchanged else self.plan(url)
        self.urls = {url.url_id: url for url in urls}
        self.plans = plans
        self.revision = revision

    def plan(self, url: UrlInfo) -> RoutePlan | UrlMisconfigured:
        reference = url.function if url.qualifier is None else f"{url.function}:{url.qualifier}"
        route = Route(
            name=f"function-url:{url.url_id}",
            index=-1,
            host=url.url_id + self.suffix,
            function=reference,
            auth=url.auth,
            cors=url.cors,
        )
        target: Target = self.functions.target(reference)
        if url.invoke_mode == "BUFFERED":
            target = BufferedTarget(target)
        try:
            return compile_plan(route, target, self.env, self.http)
        except AuthSetupError as exc:
            log.error("Function URL %s of %s: auth.%s: %s", url.url_id, reference, exc.key, exc.message)
            return UrlMisconfigured(f"the Function URL's auth cannot be used: {exc.key}: {exc.message}")
