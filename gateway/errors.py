"""Errors the gateway answers itself, and the one place they become HTTP.

    GatewayError                       status, code, message
    ├── BadRequest                     400 bad_request
    ├── Unauthorized / Forbidden       401 / 403 (from auth policies)
    ├── NoRoute                        404 no_route
    ├── MethodNotAllowed               405 method_not_allowed (carries `allow`)
    ├── RequestTimeout                 408 request_timeout (answered by the listener)
    ├── PayloadTooLarge                413 payload_too_large
    ├── HeaderFieldsTooLarge           431 request_header_fields_too_large (answered by the listener)
    ├── Throttled                      429 throttled (carries `retry_after`)
    ├── UpstreamError                  502 (origin unreachable, function failed)
    ├── ControlPlaneUnavailable        503 control_plane_unavailable (a fleet's Redis is unreachable)
    └── UpstreamTimeout                504 (origin or function too slow)

Lower layers (httpx, wasm_runtime, auth) raise their own typed errors; `error_from` translates
them here so every answer has the same JSON shape (DESIGN.md, "HTTP surface").
"""

from __future__ import annotations

import json
import logging

import httpx

from edge.errors import ControlPlaneError
from gateway.context import EdgeResponse, single_chunk
from gateway.policies.auth import AuthFailure
from wasm_runtime import FunctionError, FunctionThrottled


class GatewayError(Exception):
    status = 500
    code = "internal_error"

    def __init__(self, message: str, *, headers: list[tuple[str, str]] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = headers or []


class BadRequest(GatewayError):
    status, code = 400, "bad_request"


class Unauthorized(GatewayError):
    status, code = 401, "unauthorized"


class Forbidden(GatewayError):
    status, code = 403, "forbidden"


class NoRoute(GatewayError):
    status, code = 404, "no_route"


class MethodNotAllowed(GatewayError):
    status, code = 405, "method_not_allowed"

    def __init__(self, message: str, allow: tuple[str, ...]) -> None:
        super().__init__(message, headers=[("allow", ", ".join(allow))])


class RequestTimeout(GatewayError):
    status, code = 408, "request_timeout"


class PayloadTooLarge(GatewayError):
    status, code = 413, "payload_too_large"


class HeaderFieldsTooLarge(GatewayError):
    status, code = 431, "request_header_fields_too_large"


class Throttled(GatewayError):
    status, code = 429, "throttled"

    def __init__(self, message: str, retry_after_s: int = 1) -> None:
        super().__init__(message, headers=[("retry-after", str(retry_after_s))])


class UpstreamError(GatewayError):
    status, code = 502, "bad_gateway"

    def __init__(self, message: str, code: str = "bad_gateway") -> None:
        super().__init__(message)
        self.code = code


class ControlPlaneUnavailable(GatewayError):
    status, code = 503, "control_plane_unavailable"

    def __init__(self, message: str, retry_after_s: int = 1) -> None:
        super().__init__(message, headers=[("retry-after", str(retry_after_s))])


class UpstreamTimeout(GatewayError):
    status, code = 504, "gateway_timeout"

    def __init__(self, message: str, code: str = "gateway_timeout") -> None:
        super().__init__(message)
        self.code = code


def error_from(exc: BaseException) -> GatewayError:
    """Map an exception from any layer to the error the client sees."""
    if isinstance(exc, GatewayError):
        return exc
    if isinstance(exc, AuthFailure):
        error: GatewayError = (Unauthorized if exc.status == 401 else Forbidden)(
            exc.message, headers=exc.headers
        )
        error.code = exc.code
        return error
    if isinstance(exc, ControlPlaneError):
        # The detail (Redis address, error) goes to the log, not to the client.
        return ControlPlaneUnavailable("the fleet's shared state is unavailable; try again")
    if isinstance(exc, FunctionThrottled):
        return Throttled(str(exc), retry_after_s=exc.retry_after_s)
    if isinstance(exc, FunctionError):
        cls = UpstreamTimeout if exc.status == 504 else UpstreamError
        return cls(str(exc), code=exc.code)
    if isinstance(exc, httpx.TimeoutException) and not isinstance(exc, httpx.ConnectTimeout):
        return UpstreamTimeout("origin did not answer in time", code="origin_timeout")
    if isinstance(exc, (httpx.TransportError, httpx.InvalidURL)):
        return UpstreamError("origin unreachable", code="origin_unreachable")
    return GatewayError("internal error")


log = logging.getLogger("edgefn.gateway")


def error_response(exc: BaseException, request_id: str) -> EdgeResponse:
    """The JSON error of DESIGN.md for any exception; unexpected ones are logged with a traceback."""
    error = error_from(exc)
    if not isinstance(exc, GatewayError) or error.status >= 500:
        log.warning(
            "request %s failed: %s: %s", request_id, type(exc).__name__, exc, exc_info=error.status == 500
        )
    body = error_body(error, request_id)
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers.extend((k.encode(), v.encode("latin-1")) for k, v in error.headers)
    return EdgeResponse(error.status, headers, single_chunk(body), served_by="gateway", error_code=error.code)


def error_body(error: GatewayError, request_id: str) -> bytes:
    return json.dumps(
        {"error": {"code": error.code, "message": error.message, "request_id": request_id}}
    ).encode()
