"""`GET /openapi.json`: an OpenAPI 3.1 description of the whole admin API, kept by hand.

Kept by hand (not generated from docstrings) so that the schemas say what the JSON answers hold,
which the handlers do not declare. tests/registry/test_openapi.py checks that every mounted admin
route and method is described here and nothing else is, and that the document is valid OpenAPI
3.1, so a new route without a description fails the tests. It is served behind the admin token
like everything but `/healthz`: it holds no secret, but "no token, no access" is simpler to trust.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

Handler = Callable[[Request], Awaitable[Response]]
Guard = Callable[[Handler], Handler]
Schema = dict[str, Any]


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def obj(properties: dict[str, Schema], required: tuple[str, ...] = (), **extra: Any) -> Schema:
    return {"type": "object", "properties": properties, "required": list(required), **extra}


STRING: Schema = {"type": "string"}
INTEGER: Schema = {"type": "integer"}
NUMBER: Schema = {"type": "number"}
BOOLEAN: Schema = {"type": "boolean"}
STRINGS: Schema = {"type": "array", "items": STRING}
STRING_MAP: Schema = {"type": "object", "additionalProperties": STRING}


def json_body(schema: Schema, description: str = "") -> Schema:
    return {"description": description or "JSON", "content": {"application/json": {"schema": schema}}}


def errors(*statuses: int) -> dict[str, Schema]:
    """Every operation may also answer 401 (no or bad token) and 503 (no token configured)."""
    reasons = {
        400: "a value breaks a rule; the message says which and why",
        404: "no such function, version, alias, URL, secret or invocation",
        409: "the state forbids it (an alias points at the version, defined in edgefn.toml, exists)",
        413: "the body is too large",
        503: "the gateway is starting, the admin token is not set, or the control plane is unreachable",
    }
    out = {str(s): json_body(ref("Error"), reasons[s]) for s in statuses}
    out["401"] = json_body(ref("Error"), "no or wrong bearer token")
    out.setdefault("503", json_body(ref("Error"), reasons[503]))
    return out


def op(
    summary: str,
    tag: str,
    ok: dict[str, Schema],
    *fails: int,
    body: Schema | None = None,
    params: tuple[Schema, ...] = (),
    description: str = "",
) -> Schema:
    operation: Schema = {"summary": summary, "tags": [tag], "responses": {**ok, **errors(*fails)}}
    if description:
        operation["description"] = description
    if body is not None:
        operation["requestBody"] = body
    if params:
        operation["parameters"] = list(params)
    return operation


def path_param(name: str, description: str, schema: Schema = STRING) -> Schema:
    return {"name": name, "in": "path", "required": True, "description": description, "schema": schema}


def query(name: str, description: str, schema: Schema = STRING) -> Schema:
    return {"name": name, "in": "query", "required": False, "description": description, "schema": schema}


def answer(schema: Schema, description: str = "OK", status: int = 200) -> dict[str, Schema]:
    return {str(status): json_body(schema, description)}


NO_CONTENT = {"204": {"description": "done; no body"}}
NAME = path_param("name", "function name: 1-64 letters, digits, '-', '_'")
ALIAS = path_param("alias", "alias name: letters, digits, '-', '_', not all digits")
QUALIFIER = query("qualifier", "alias name; absent (or $LATEST) for the unqualified URL")

CONFIG: Schema = obj(
    {
        "memory_mb": {"type": "integer", "minimum": 16, "maximum": 10240},
        "timeout_s": {"type": "number", "exclusiveMinimum": 0, "maximum": 900},
        "reserved_concurrency": {"type": "integer", "minimum": 0, "description": "0: no limit"},
        "env": {**STRING_MAP, "description": "at most 4096 bytes of keys and values (as Lambda)"},
        "secrets": {**STRING_MAP, "description": "ENV_NAME -> secret name; the value is never shown"},
        "outbound": {**STRINGS, "description": "origin names or host:port the function may call"},
        "instance_reuse": {"type": "integer", "minimum": 0},
        "provisioned": {
            "type": "integer",
            "minimum": 0,
            "maximum": 1000,
            "description": "instances made ahead of demand (needs instance_reuse > 0)",
        },
        "async": obj(
            {
                "max_retries": {"type": "integer", "minimum": 0, "maximum": 10},
                "retry_delays_s": {"type": "array", "items": NUMBER},
                "max_event_age_s": {"type": "number", "minimum": 60, "maximum": 21600},
            }
        ),
        "schedule": {**STRINGS, "description": "cron(m h dom mon dow year) or rate(N unit)"},
    },
    additionalProperties=False,
)
CORS: Schema = obj(
    {
        "allow_origins": STRINGS,
        "allow_methods": STRINGS,
        "allow_headers": STRINGS,
        "expose_headers": STRINGS,
        "max_age": {"type": ["integer", "null"]},
        "allow_credentials": BOOLEAN,
    }
)
AUTH: Schema = {
    "oneOf": [
        {"type": "string", "enum": ["none", "sigv4"]},
        obj(
            {
                "type": {"type": "string", "enum": ["none", "sigv4"]},
                "credentials_env": {**STRING, "description": "env var holding ACCESS_KEY_ID:SECRET pairs"},
                "service": STRING,
                "region": {"type": ["string", "null"]},
            },
            ("type",),
        ),
    ]
}
URL_SETTINGS = {
    "auth": AUTH,
    "invoke_mode": {"type": "string", "enum": ["BUFFERED", "RESPONSE_STREAM"]},
    "cors": {"oneOf": [CORS, {"type": "null"}]},
}

SCHEMAS: dict[str, Schema] = {
    "Error": obj(
        {"error": obj({"code": STRING, "message": STRING, "request_id": STRING}, ("code", "message"))},
        ("error",),
    ),
    "FunctionConfig": CONFIG,
    "Version": obj(
        {
            "version": INTEGER,
            "code_sha256": STRING,
            "config": ref("FunctionConfig"),
            "description": STRING,
            "created": NUMBER,
        },
        ("version", "code_sha256", "config"),
    ),
    "Alias": obj(
        {
            "name": STRING,
            "version": INTEGER,
            "additional_version_weights": {
                "type": "object",
                "additionalProperties": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
                "description": "at most one other version and its share of requests",
            },
            "description": STRING,
        },
        ("name", "version"),
    ),
    "Function": obj(
        {
            "name": STRING,
            "code_sha256": STRING,
            "code_size": INTEGER,
            "config": ref("FunctionConfig"),
            "last_modified": NUMBER,
            "versions": {"type": "array", "items": ref("Version")},
            "aliases": {"type": "array", "items": ref("Alias")},
            "source": {"type": "string", "enum": ["registry", "config"]},
        },
        ("name", "code_sha256", "config", "source"),
    ),
    "Configuration": obj(
        {
            "name": STRING,
            "source": {"type": "string", "enum": ["registry", "config"]},
            **CONFIG["properties"],
        },
        ("name", "source"),
    ),
    "FunctionUrl": obj(
        {
            "url_id": {"type": "string", "pattern": "^[a-z0-9]{32}$"},
            "url": {"type": "string", "description": "http://<url_id>.<url_domain>[:port]/"},
            "function": STRING,
            "qualifier": {"type": ["string", "null"]},
            **URL_SETTINGS,
            "created": NUMBER,
        },
        ("url_id", "url", "function"),
    ),
    "Invocation": obj(
        {
            "id": STRING,
            "function": STRING,
            "reference": STRING,
            "state": {"type": "string", "enum": ["queued", "running", "succeeded", "dlq"]},
            "attempts": INTEGER,
            "created": NUMBER,
            "due": NUMBER,
            "updated": NUMBER,
            "method": STRING,
            "path": STRING,
            "body_bytes": INTEGER,
            "last_status": {"type": ["integer", "null"]},
            "last_error": {"type": ["string", "null"]},
        }
    ),
    "LogLine": obj({}, additionalProperties=True, description="START, END, REPORT or a guest output line"),
    "OriginPool": obj(
        {
            "name": STRING,
            "select": STRING,
            "health": {"type": ["object", "null"]},
            "endpoints": {"type": "array"},
        },
        additionalProperties=True,
    ),
}


def _paths() -> dict[str, Schema]:
    fn, ver, al, url, sec = "functions", "versions", "aliases", "urls", "secrets"
    inv, ops = "invocations", "node"
    functions = {"type": "array", "items": ref("Function")}
    urls = {"type": "array", "items": ref("FunctionUrl")}
    return {
        "/healthz": {
            "get": {
                "summary": "Liveness and readiness; the only route without the token",
                "tags": [ops],
                "security": [],
                "responses": {
                    "200": json_body(obj({"status": STRING, "node": STRING}), "ready"),
                    "503": json_body(obj({"status": STRING, "node": STRING}), "starting"),
                },
            }
        },
        "/openapi.json": {"get": op("This document", ops, {"200": {"description": "OpenAPI 3.1 document"}})},
        "/metrics": {
            "get": op(
                "Prometheus metrics",
                ops,
                {"200": {"description": "text exposition format", "content": {"text/plain": {}}}},
            )
        },
        "/origins": {
            "get": op(
                "Origin pools and endpoint health", ops, answer({"type": "array", "items": ref("OriginPool")})
            )
        },
        "/cache": {
            "get": op("Edge cache statistics and keys", "cache", answer(obj({}, additionalProperties=True)))
        },
        "/cache/purge": {
            "post": op(
                "Purge cached variants by exact key or key prefix",
                "cache",
                answer(obj({"purged": INTEGER, "told": INTEGER})),
                400,
                body=json_body(
                    {"oneOf": [obj({"key": STRING}, ("key",)), obj({"prefix": STRING}, ("prefix",))]}
                ),
            )
        },
        "/fleet": {
            "get": op(
                "Members of the fleet: one per gateway process (serve --workers N makes N per node)",
                "fleet",
                answer(
                    obj(
                        {
                            "self": STRING,
                            "lease_s": NUMBER,
                            "nodes": {"type": "object", "additionalProperties": INTEGER},
                            "members": {
                                "type": "array",
                                "items": obj(
                                    {
                                        "id": STRING,
                                        "node": STRING,
                                        "host": STRING,
                                        "pid": INTEGER,
                                        "started": NUMBER,
                                        "expires_in_s": NUMBER,
                                    },
                                    ("id", "node", "host", "pid", "started", "expires_in_s"),
                                ),
                            },
                        },
                        ("self", "lease_s", "nodes", "members"),
                    )
                ),
                404,
                description='404 `not_in_a_fleet` with control_plane = "sqlite" (docs/fleet.md, Workers)',
            )
        },
        "/functions": {
            "get": op(
                "All functions, from edgefn.toml and deployed", fn, answer(obj({"functions": functions}))
            )
        },
        "/functions/{name}": {
            "parameters": [NAME],
            "get": op("One function with its versions and aliases", fn, answer(ref("Function")), 404),
            "delete": op("Delete a function, its versions, aliases and URLs", fn, NO_CONTENT, 404, 409),
        },
        "/functions/{name}/code": {
            "parameters": [NAME],
            "post": op(
                "Deploy $LATEST's code",
                fn,
                {**answer(ref("Function"), "updated"), **answer(ref("Function"), "created", 201)},
                400,
                409,
                413,
                body={
                    "description": "a wasi:http/proxy component, at most 256 MB",
                    "required": True,
                    "content": {"application/wasm": {}, "application/octet-stream": {}},
                },
                params=(
                    {
                        "name": "x-edgefn-configuration",
                        "in": "header",
                        "required": False,
                        "description": "configuration keys (JSON object, as PUT .../configuration) "
                        "written in the same change as the code",
                        "schema": STRING,
                    },
                ),
                description="The file is validated and compiled first: one that is not a working component "
                "is refused with the reason (400 invalid_component) and nothing changes.",
            ),
        },
        "/functions/{name}/configuration": {
            "parameters": [NAME],
            "get": op("$LATEST's configuration", fn, answer(ref("Configuration")), 404),
            "put": op(
                "Change the keys given; the others keep their values",
                fn,
                answer(ref("Configuration")),
                400,
                404,
                409,
                body=json_body(ref("FunctionConfig")),
            ),
        },
        "/functions/{name}/versions": {
            "parameters": [NAME],
            "get": op(
                "Published versions",
                ver,
                answer(obj({"versions": {"type": "array", "items": ref("Version")}})),
                404,
            ),
            "post": op(
                "Publish $LATEST as an immutable version (the newest one if nothing changed)",
                ver,
                answer(ref("Version"), "published", 201),
                400,
                404,
                409,
                body=json_body(obj({"description": STRING})),
            ),
        },
        "/functions/{name}/versions/{version}": {
            "parameters": [NAME, path_param("version", "version number", INTEGER)],
            "delete": op(
                "Delete a version (not while an alias points at it)", ver, NO_CONTENT, 400, 404, 409
            ),
        },
        "/functions/{name}/aliases": {
            "parameters": [NAME],
            "get": op("Aliases", al, answer(obj({"aliases": {"type": "array", "items": ref("Alias")}})), 404),
        },
        "/functions/{name}/aliases/{alias}": {
            "parameters": [NAME, ALIAS],
            "get": op("One alias", al, answer(ref("Alias")), 404),
            "put": op(
                "Create or move an alias, optionally sharing requests with one other version",
                al,
                answer(ref("Alias")),
                400,
                404,
                409,
                body=json_body(
                    obj(
                        {
                            "version": INTEGER,
                            "additional_version_weights": {"type": "object", "additionalProperties": NUMBER},
                            "description": STRING,
                        },
                        ("version",),
                    ),
                    '{"version": 1, "additional_version_weights": {"2": 0.3}}',
                ),
            ),
            "delete": op("Delete an alias and its Function URL", al, NO_CONTENT, 404, 409),
        },
        "/functions/{name}/urls": {
            "parameters": [NAME],
            "get": op("The function's URLs", url, answer(obj({"urls": urls})), 404),
            "post": op(
                "Create a Function URL (one per function and qualifier)",
                url,
                answer(ref("FunctionUrl"), "created", 201),
                400,
                404,
                409,
                body=json_body(obj({"qualifier": {"type": ["string", "null"]}, **URL_SETTINGS})),
            ),
            "put": op(
                "Change a URL's auth, invoke_mode or cors; its url-id stays",
                url,
                answer(ref("FunctionUrl")),
                400,
                404,
                params=(QUALIFIER,),
                body=json_body(obj(URL_SETTINGS)),
            ),
            "delete": op("Delete a Function URL", url, NO_CONTENT, 404, params=(QUALIFIER,)),
        },
        "/urls": {"get": op("Every Function URL of the node", url, answer(obj({"urls": urls})))},
        "/secrets": {"get": op("Secret names (never values)", sec, answer(obj({"secrets": STRINGS})))},
        "/secrets/{name}": {
            "parameters": [path_param("name", "secret name: letters, digits, '_', '.', '-'")],
            "put": op(
                "Create or replace a secret",
                sec,
                answer(obj({"name": STRING})),
                400,
                body=json_body(obj({"value": STRING}, ("value",))),
            ),
            "delete": op("Delete a secret (not while a configuration reads it)", sec, NO_CONTENT, 404, 409),
        },
        "/functions/{name}/invoke": {
            "parameters": [NAME],
            "post": op(
                "Invoke a function without a route",
                inv,
                {
                    "200": {"description": "RequestResponse: the function's own status, headers and body"},
                    "202": json_body(obj({"invocation_id": STRING}), "Event: stored, runs later"),
                    "204": {"description": "DryRun: the reference resolves"},
                },
                400,
                404,
                params=(
                    query("qualifier", "alias or version"),
                    query("type", "RequestResponse (default), Event or DryRun"),
                    {"name": "x-edgefn-request-method", "in": "header", "schema": STRING},
                    {"name": "x-edgefn-request-path", "in": "header", "schema": STRING},
                    {"name": "x-edgefn-request-header", "in": "header", "schema": STRING},
                ),
                body={"description": "the function's request body, streamed", "content": {"*/*": {}}},
            ),
        },
        "/functions/{name}/invocations": {
            "parameters": [NAME],
            "get": op(
                "Asynchronous invocations by state",
                inv,
                answer(obj({"function": STRING, "events": {"type": "array", "items": ref("Invocation")}})),
                400,
                params=(query("state", "comma-separated: queued, running, succeeded, dlq"),),
            ),
        },
        "/invocations/{id}": {
            "parameters": [path_param("id", "invocation id")],
            "get": op("One asynchronous invocation", inv, answer(ref("Invocation")), 404),
        },
        "/functions/{name}/dlq": {
            "parameters": [NAME],
            "get": op(
                "The dead-letter queue",
                inv,
                answer(obj({"function": STRING, "events": {"type": "array", "items": ref("Invocation")}})),
            ),
        },
        "/functions/{name}/dlq/redrive": {
            "parameters": [NAME],
            "post": op(
                "Queue every dead letter again", inv, answer(obj({"function": STRING, "redriven": INTEGER}))
            ),
        },
        "/functions/{name}/logs": {
            "parameters": [NAME],
            "get": op(
                "Recent log lines of the function (this process's ring)",
                inv,
                {
                    **answer(obj({"function": STRING, "lines": {"type": "array", "items": ref("LogLine")}})),
                },
                params=(
                    query("limit", "at most this many lines", INTEGER),
                    query("request_id", "only this request's lines"),
                    query("follow", "1: text/event-stream of new lines"),
                ),
            ),
        },
    }


def document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "edgefn admin API",
            "version": "1",
            "description": "Functions, versions, aliases, Function URLs, secrets, invocations, cache "
            "and node state. Every route but /healthz needs `Authorization: Bearer $EDGEFN_ADMIN_TOKEN`. "
            'Errors are JSON: {"error": {"code", "message", "request_id"}}.',
        },
        "security": [{"bearer": []}],
        "paths": _paths(),
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": SCHEMAS,
        },
    }


def openapi_routes(guard: Guard) -> list[Route]:
    body = document()

    async def serve(request: Request) -> Response:
        return JSONResponse(body)

    return [Route("/openapi.json", guard(serve), methods=["GET"])]
