"""The admin listener: health, metrics and node state, behind a bearer token.

`/healthz` is open so load balancers and Kubernetes probes need no secret; everything else needs
`Authorization: Bearer $EDGEFN_ADMIN_TOKEN`. With no token configured nothing but `/healthz`
answers: an admin API left open by omission is worse than one that is off.
"""

from __future__ import annotations

import hmac
import json
import os
from collections.abc import Awaitable, Callable

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gateway.admin.cache_api import cache_routes
from gateway.admin.errors import admin_error
from gateway.admin.fleet_api import fleet_routes
from gateway.admin.functions_api import function_routes
from gateway.admin.invocations_api import invocation_routes
from gateway.admin.invoke_api import invoke_routes
from gateway.admin.openapi import openapi_routes
from gateway.app import Gateway

Handler = Callable[[Request], Awaitable[Response]]


def require_token(handler: Handler) -> Handler:
    async def guarded(request: Request) -> Response:
        token = os.environ.get("EDGEFN_ADMIN_TOKEN", "")
        if not token:
            return admin_error(503, "admin_disabled", "set EDGEFN_ADMIN_TOKEN to use the admin API")
        sent = request.headers.get("authorization", "")
        scheme, _, value = sent.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode(), token.encode()):
            response = admin_error(401, "unauthorized", "a valid bearer token is required")
            response.headers["www-authenticate"] = 'Bearer realm="edgefn-admin"'
            return response
        return await handler(request)

    return guarded


def admin_app(gateway: Gateway) -> Starlette:
    async def healthz(request: Request) -> Response:
        ready = gateway.pipeline is not None
        return JSONResponse(
            {"status": "ok" if ready else "starting", "node": gateway.config.node.name},
            status_code=200 if ready else 503,
        )

    async def metrics(request: Request) -> Response:
        return Response(generate_latest(gateway.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    async def origins(request: Request) -> Response:
        return Response(
            json.dumps([p.describe() for p in gateway.pools.values()]), media_type="application/json"
        )

    return Starlette(
        routes=[
            Route("/healthz", healthz),
            Route("/metrics", require_token(metrics)),
            Route("/origins", require_token(origins)),
            *cache_routes(gateway, require_token),
            *fleet_routes(gateway, require_token),
            *invocation_routes(gateway, require_token),
            *function_routes(gateway, require_token),
            *openapi_routes(require_token),
            *invoke_routes(gateway, require_token),
        ]
    )
