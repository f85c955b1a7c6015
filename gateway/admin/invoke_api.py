"""Admin `POST /functions/{name}/invoke`: run a function without a route, as Lambda's Invoke.

    POST /functions/{name}/invoke?qualifier=Q&type=RequestResponse|Event|DryRun

The admin request's body is the function's request body, streamed. What else the function sees
is described by optional headers, so that a body of any size or type needs no envelope:

    x-edgefn-request-method: GET          the method (default POST)
    x-edgefn-request-path: /a/b?c=1       path and query (default /)
    x-edgefn-request-header: name: value  one request header; repeat for more
    content-type                          passed on as it is

RequestResponse answers with the function's status, headers (`x-edgefn-executed-version`
included) and body, streamed. Event answers 202 `{"invocation_id": ...}` once the event is stored
(it runs as any Event does: retries, DLQ); DryRun answers 204 when the reference resolves. Errors
are DESIGN.md's JSON errors: 404 for an unknown function, version or alias, 400 for a bad type or
request description.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.context import EdgeRequest, EdgeResponse, RawHeaders, RequestContext
from gateway.errors import BadRequest, GatewayError, error_response
from routes.values import TOKEN, header_value

if TYPE_CHECKING:
    from gateway.app import Gateway

Handler = Callable[[Request], Awaitable[Response]]
Guard = Callable[[Handler], Handler]
TYPES = {"requestresponse": "RequestResponse", "event": "Event", "dryrun": "DryRun"}
METHOD = "x-edgefn-request-method"
PATH = "x-edgefn-request-path"
HEADER = "x-edgefn-request-header"


class Starting(GatewayError):
    status, code = 503, "starting"


class FunctionAnswer(Response):
    """Sends an `EdgeResponse` the way the public listener does (streamed, x-request-id)."""

    def __init__(self, gateway: Gateway, response: EdgeResponse, request_id: str) -> None:
        self.gateway = gateway
        self.response = response
        self.request_id = request_id
        self.status_code = response.status

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.gateway.send_response(RequestContext(request_id=self.request_id), self.response, send)


def invoke_routes(gateway: Gateway, guard: Guard) -> list[Route]:
    async def invoke(request: Request) -> Response:
        request_id = uuid.uuid4().hex
        try:
            response = await run_invoke(gateway, request, request_id)
        except Exception as exc:
            response = error_response(exc, request_id)
        return FunctionAnswer(gateway, response, request_id)

    return [Route("/functions/{name}/invoke", guard(invoke), methods=["POST"])]


async def run_invoke(gateway: Gateway, request: Request, request_id: str) -> EdgeResponse:
    functions, invocations = gateway.functions, gateway.invocations
    if functions is None or invocations is None:
        raise Starting("the gateway has not finished starting")
    kind = TYPES.get(request.query_params.get("type", "RequestResponse").lower())
    if kind is None:
        raise BadRequest("type must be RequestResponse, Event or DryRun")
    name = request.path_params["name"]
    qualifier = request.query_params.get("qualifier")
    reference = f"{name}:{qualifier}" if qualifier else name
    edge_request = function_request(request, request_id, kind)
    if kind != "RequestResponse":
        answer = await invocations.intercept(reference, edge_request)
        if answer is None:
            raise GatewayError(f"the {kind} invocation was not accepted")
        return answer
    return await functions.invoke(reference, edge_request)


def function_request(request: Request, request_id: str, kind: str) -> EdgeRequest:
    """The request the function sees, from the admin request's body and description headers."""
    method = request.headers.get(METHOD, "POST").upper()
    if not TOKEN.fullmatch(method):
        raise BadRequest(f"{METHOD}: {method!r} is not an HTTP method")
    target = request.headers.get(PATH, "/")
    if not target.startswith("/") or any(c in target for c in " \r\n\x00#"):
        raise BadRequest(f"{PATH}: {target!r} is not a path (it starts with '/', an optional ?query)")
    path, _, query = target.partition("?")
    headers: RawHeaders = []
    for line in request.headers.getlist(HEADER):
        key, sep, value = line.partition(":")
        key, value = key.strip().lower(), value.strip()
        if not sep or not TOKEN.fullmatch(key) or header_value(value):
            raise BadRequest(f"{HEADER}: {line!r} is not 'name: value'")
        headers.append((key.encode(), value.encode("latin-1")))
    for name in ("content-type", "content-length"):
        if name in request.headers:
            headers.append((name.encode(), request.headers[name].encode("latin-1")))
    headers.append((b"x-request-id", request_id.encode()))
    if kind != "RequestResponse":
        headers.append((b"x-edgefn-invocation-type", kind.encode()))
    client = request.client.host if request.client else "0.0.0.0"
    return EdgeRequest(
        method=method,
        scheme="http",
        host=request.headers.get("host", "localhost"),
        path=path,
        query=query.encode("latin-1"),
        headers=headers,
        body=_body(request),
        client=client,
        peer=client,
        request_id=request_id,
    )


async def _body(request: Request) -> AsyncIterator[bytes]:
    async for chunk in request.stream():
        if chunk:
            yield chunk
