"""Admin endpoints of the function registry: code, configuration, versions, aliases, URLs, secrets.

    POST   /functions/{name}/code                 raw .wasm body (max 256 MB): deploy $LATEST, with
                                                  x-edgefn-configuration: {JSON} written in the same change
    GET    /functions                             {"functions": [...]}
    GET    /functions/{name}                      one function, with its versions and aliases
    DELETE /functions/{name}                      with its versions, aliases and URLs
    GET    /functions/{name}/configuration        $LATEST's configuration
    PUT    /functions/{name}/configuration        change the keys given, keep the others
    POST   /functions/{name}/versions             {"description": ...}: publish
    GET    /functions/{name}/versions             {"versions": [...]}
    DELETE /functions/{name}/versions/{version}   refused (409) while an alias points at it
    PUT    /functions/{name}/aliases/{alias}      {"version": 1, "additional_version_weights": {"2": 0.3}}
    GET    /functions/{name}/aliases[/{alias}]
    DELETE /functions/{name}/aliases/{alias}      and the alias's Function URL
    POST   /functions/{name}/urls                 {"qualifier", "auth", "invoke_mode", "cors"}
    PUT    /functions/{name}/urls?qualifier=Q     change auth, invoke_mode or cors
    GET    /functions/{name}/urls, GET /urls
    DELETE /functions/{name}/urls?qualifier=Q
    PUT    /secrets/{name}                        {"value": "..."}
    GET    /secrets                               names only
    DELETE /secrets/{name}                        refused (409) while a configuration reads it

An upload is streamed to a temporary file in `data_dir`, checked with `Runtime.validate` and
compiled with `Runtime.load` before the registry is touched, so a file that is not a working
`wasi:http/proxy` component is refused with the reason and nothing changes (the compiled artifact
also warms the compile cache for the first request). Secret values are write-only: no answer and
no log line carries one.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from edge.errors import ControlPlaneError
from gateway.admin.errors import admin_error
from gateway.functions.registry import Invalid, NotFound, Registry, RegistryError, UrlInfo
from routes import ConfigError
from routes.loader import function_url_from_dict
from wasm_runtime import InvalidComponent

if TYPE_CHECKING:
    from gateway.app import Gateway

log = logging.getLogger("edgefn.admin.functions")

Handler = Callable[[Request], Awaitable[Response]]
Guard = Callable[[Handler], Handler]
MAX_CODE_BYTES = 256 * 1024 * 1024
MAX_JSON_BYTES = 1024 * 1024
URL_KEYS = {"auth", "invoke_mode", "cors"}
CONFIGURATION_HEADER = "x-edgefn-configuration"


class ApiError(Exception):
    """An answer other than the registry's own errors (400 bad body, 413, 503)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _answers(handler: Handler) -> Handler:
    """One translation of errors into DESIGN.md's JSON error answer."""

    async def run(request: Request) -> Response:
        try:
            return await handler(request)
        except ApiError as exc:
            return admin_error(exc.status, exc.code, exc.message)
        except RegistryError as exc:
            return admin_error(exc.status, exc.code, str(exc))
        except ConfigError as exc:
            return admin_error(400, "invalid", str(exc))
        except ControlPlaneError as exc:  # a fleet's Redis is unreachable: nothing changed
            return admin_error(503, "control_plane_unavailable", str(exc))

    return run


async def _json(request: Request, *, required: bool = True) -> dict[str, Any]:
    raw = b""
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > MAX_JSON_BYTES:
            raise ApiError(413, "payload_too_large", f"a JSON body is at most {MAX_JSON_BYTES} bytes")
    if not raw.strip():
        if required:
            raise ApiError(400, "bad_request", "the body must be a JSON object")
        return {}
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise ApiError(400, "bad_request", f"the body is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise ApiError(400, "bad_request", "the body must be a JSON object")
    return body


def _configuration_header(request: Request) -> dict[str, Any] | None:
    """Configuration keys sent with the code (`x-edgefn-configuration: {JSON}`), written with it."""
    raw = request.headers.get(CONFIGURATION_HEADER)
    if raw is None:
        return None
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise ApiError(400, "bad_request", f"{CONFIGURATION_HEADER} is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise ApiError(400, "bad_request", f"{CONFIGURATION_HEADER} must be a JSON object")
    return body


def _only(body: dict[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise Invalid(f"{unknown[0]}: unknown key (known: {', '.join(sorted(allowed))})")


def _string(body: dict[str, Any], key: str, default: str | None) -> str | None:
    value = body.get(key, default)
    if value is not None and not isinstance(value, str):
        raise Invalid(f"{key}: expected a string, got {type(value).__name__}")
    return value


def _version_number(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise Invalid(f"{text!r} is not a version number (1, 2, ...)")
    return int(text)


def function_routes(gateway: Gateway, guard: Guard) -> list[Route]:
    """The registry's admin routes, each behind `guard` (the admin app's bearer-token check)."""

    def registry() -> Registry:
        if gateway.registry is None:
            raise ApiError(503, "starting", "the gateway has not finished starting")
        return gateway.registry

    async def call(method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return await asyncio.to_thread(method, *args, **kwargs)
        finally:
            if gateway.functions is not None:
                gateway.functions.changed()  # this process serves the change from its next request

    def url_doc(info: UrlInfo) -> dict[str, Any]:
        return {**info.to_doc(), "url": registry().public_url(info.url_id)}

    # -- functions ----------------------------------------------------------------------------

    async def deploy(request: Request) -> Response:
        name = request.path_params["name"]
        reg = registry()
        runtime = gateway.runtime
        if runtime is None:
            raise ApiError(503, "starting", "the gateway has not finished starting")
        settings = _configuration_header(request)
        await call(reg.check_deployable, name, settings)  # a bad setting is refused before the upload
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > MAX_CODE_BYTES:
            raise ApiError(413, "payload_too_large", f"a component is at most {MAX_CODE_BYTES} bytes")
        upload = await _receive_file(request, Path(gateway.config.node.data_dir) / "uploads")
        try:
            data = await asyncio.to_thread(upload.read_bytes)
            if not data:
                raise ApiError(400, "bad_request", "the body is empty: send the .wasm file's bytes")
            try:
                runtime.validate(data)
                await runtime.load(upload)
            except InvalidComponent as exc:
                raise ApiError(400, "invalid_component", f"not deployed: {exc}") from None
            del data
            try:
                existed = (await call(reg.get, name)).source == "registry"
            except NotFound:
                existed = False
            info = await call(reg.deploy, name, upload, settings)
        finally:
            upload.unlink(missing_ok=True)
        log.info("deployed %s: code sha256=%s (%d bytes)", name, info.code_sha256, info.code_size)
        return JSONResponse(info.to_doc(), status_code=200 if existed else 201)

    async def list_functions(request: Request) -> Response:
        return JSONResponse({"functions": [f.to_doc() for f in await call(registry().functions)]})

    async def get_function(request: Request) -> Response:
        return JSONResponse((await call(registry().get, request.path_params["name"])).to_doc())

    async def delete_function(request: Request) -> Response:
        name = request.path_params["name"]
        await call(registry().delete, name)
        log.info("deleted function %s", name)
        return Response(status_code=204)

    async def get_configuration(request: Request) -> Response:
        info = await call(registry().get, request.path_params["name"])
        return JSONResponse({"name": info.name, "source": info.source, **info.config.to_doc()})

    async def put_configuration(request: Request) -> Response:
        body = await _json(request)
        info = await call(registry().update_config, request.path_params["name"], body)
        return JSONResponse({"name": info.name, "source": info.source, **info.config.to_doc()})

    # -- versions and aliases -----------------------------------------------------------------

    async def publish(request: Request) -> Response:
        body = await _json(request, required=False)
        _only(body, {"description"})
        name = request.path_params["name"]
        version = await call(registry().publish, name, _string(body, "description", "") or "")
        log.info("published %s version %d", name, version.version)
        return JSONResponse(version.to_doc(), status_code=201)

    async def list_versions(request: Request) -> Response:
        info = await call(registry().get, request.path_params["name"])
        return JSONResponse({"versions": [v.to_doc() for v in info.versions]})

    async def delete_version(request: Request) -> Response:
        number = _version_number(request.path_params["version"])
        await call(registry().delete_version, request.path_params["name"], number)
        return Response(status_code=204)

    async def put_alias(request: Request) -> Response:
        body = await _json(request)
        _only(body, {"version", "additional_version_weights", "description"})
        version = body.get("version")
        if isinstance(version, str) and version.isdigit():
            version = int(version)
        if isinstance(version, bool) or not isinstance(version, int):
            raise Invalid("version: required, a published version number")
        weights = body.get("additional_version_weights") or {}
        if not isinstance(weights, dict):
            raise Invalid('additional_version_weights: an object like {"2": 0.1}')
        additional = {_version_number(str(v)): w for v, w in weights.items()}
        name, alias = request.path_params["name"], request.path_params["alias"]
        info = await call(
            registry().set_alias, name, alias, version, additional, _string(body, "description", "") or ""
        )
        log.info("alias %s:%s -> %d %s", name, alias, info.version, dict(info.additional))
        return JSONResponse(info.to_doc())

    async def get_alias(request: Request) -> Response:
        info = await call(registry().get, request.path_params["name"])
        return JSONResponse(info.alias(request.path_params["alias"]).to_doc())

    async def list_aliases(request: Request) -> Response:
        info = await call(registry().get, request.path_params["name"])
        return JSONResponse({"aliases": [a.to_doc() for a in info.aliases]})

    async def delete_alias(request: Request) -> Response:
        await call(registry().delete_alias, request.path_params["name"], request.path_params["alias"])
        return Response(status_code=204)

    # -- Function URLs ------------------------------------------------------------------------

    async def create_url(request: Request) -> Response:
        body = await _json(request, required=False)
        _only(body, {"qualifier", *URL_KEYS})
        name = request.path_params["name"]
        settings = {k: v for k, v in body.items() if k in URL_KEYS}
        url = function_url_from_dict(settings, Path(f"POST /functions/{name}/urls"))
        info = await call(
            registry().create_url, name, _string(body, "qualifier", None), url.auth, url.invoke_mode, url.cors
        )
        log.info("created Function URL %s for %s", info.url_id, name)
        return JSONResponse(url_doc(info), status_code=201)

    async def update_url(request: Request) -> Response:
        body = await _json(request)
        _only(body, URL_KEYS)
        name = request.path_params["name"]
        url = function_url_from_dict(dict(body), Path(f"PUT /functions/{name}/urls"))
        changes: dict[str, Any] = {k: getattr(url, k) for k in URL_KEYS if k in body}
        info = await call(registry().update_url, name, request.query_params.get("qualifier"), **changes)
        return JSONResponse(url_doc(info))

    async def list_urls(request: Request) -> Response:
        name = request.path_params.get("name")
        return JSONResponse({"urls": [url_doc(u) for u in await call(registry().urls, name)]})

    async def delete_url(request: Request) -> Response:
        name = request.path_params["name"]
        await call(registry().delete_url, name, request.query_params.get("qualifier"))
        return Response(status_code=204)

    # -- secrets ------------------------------------------------------------------------------

    async def put_secret(request: Request) -> Response:
        body = await _json(request)
        _only(body, {"value"})
        if not isinstance(body.get("value"), str):
            raise Invalid('value: required, a string ({"value": "..."})')
        name = request.path_params["name"]
        await call(registry().set_secret, name, body["value"])
        log.info("secret %s set", name)
        return JSONResponse({"name": name})

    async def list_secrets(request: Request) -> Response:
        return JSONResponse({"secrets": await call(registry().secret_names)})

    async def delete_secret(request: Request) -> Response:
        await call(registry().delete_secret, request.path_params["name"])
        return Response(status_code=204)

    def route(path: str, handler: Handler, method: str) -> Route:
        return Route(path, guard(_answers(handler)), methods=[method])

    return [
        route("/functions", list_functions, "GET"),
        route("/functions/{name}", get_function, "GET"),
        route("/functions/{name}", delete_function, "DELETE"),
        route("/functions/{name}/code", deploy, "POST"),
        route("/functions/{name}/configuration", get_configuration, "GET"),
        route("/functions/{name}/configuration", put_configuration, "PUT"),
        route("/functions/{name}/versions", publish, "POST"),
        route("/functions/{name}/versions", list_versions, "GET"),
        route("/functions/{name}/versions/{version}", delete_version, "DELETE"),
        route("/functions/{name}/aliases", list_aliases, "GET"),
        route("/functions/{name}/aliases/{alias}", put_alias, "PUT"),
        route("/functions/{name}/aliases/{alias}", get_alias, "GET"),
        route("/functions/{name}/aliases/{alias}", delete_alias, "DELETE"),
        route("/functions/{name}/urls", create_url, "POST"),
        route("/functions/{name}/urls", update_url, "PUT"),
        route("/functions/{name}/urls", list_urls, "GET"),
        route("/functions/{name}/urls", delete_url, "DELETE"),
        route("/urls", list_urls, "GET"),
        route("/secrets", list_secrets, "GET"),
        route("/secrets/{name}", put_secret, "PUT"),
        route("/secrets/{name}", delete_secret, "DELETE"),
    ]


async def _receive_file(request: Request, directory: Path) -> Path:
    """Stream the body to a new file in `directory`; over MAX_CODE_BYTES is a 413."""
    directory.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=directory, prefix="upload-", suffix=".wasm")
    path = Path(name)
    size = 0
    try:
        with os.fdopen(fd, "wb") as out:
            async for chunk in request.stream():
                size += len(chunk)
                if size > MAX_CODE_BYTES:
                    raise ApiError(413, "payload_too_large", f"a component is at most {MAX_CODE_BYTES} bytes")
                out.write(chunk)
    except ClientDisconnect:
        path.unlink(missing_ok=True)
        raise ApiError(400, "bad_request", "the upload was cut short") from None
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path
