"""`/openapi.json`: valid OpenAPI 3.1, describing exactly the mounted admin routes, with schemas that
the real answers satisfy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from openapi_schema_validator import OAS31Validator
from openapi_spec_validator import validate
from starlette.routing import Route

from gateway.admin.app import admin_app
from gateway.admin.openapi import document
from tests.registry.conftest import AdminNode


def mounted(node: AdminNode) -> set[tuple[str, str]]:
    app = admin_app(node.gateway)  # type: ignore[arg-type]
    return {
        (route.path, method.lower())
        for route in app.routes
        if isinstance(route, Route)
        for method in (route.methods or ())
        if method != "HEAD"
    }


def described(doc: dict[str, Any]) -> set[tuple[str, str]]:
    verbs = {"get", "put", "post", "delete", "patch"}
    return {(path, verb) for path, item in doc["paths"].items() for verb in item if verb in verbs}


def conforms(doc: dict[str, Any], schema_name: str, value: Any) -> None:
    schema = {"$ref": f"#/components/schemas/{schema_name}", "components": doc["components"]}
    OAS31Validator(schema).validate(value)


def test_the_document_is_valid_openapi_3_1() -> None:
    validate(document())


def test_every_mounted_route_is_described_and_nothing_else(admin_node: Any) -> None:
    node = admin_node()
    doc = document()
    missing = mounted(node) - described(doc)
    extra = described(doc) - mounted(node)
    assert not missing, f"admin routes without a description in gateway/admin/openapi.py: {sorted(missing)}"
    assert not extra, f"described but not mounted: {sorted(extra)}"


def test_served_behind_the_token(admin_node: Any) -> None:
    node = admin_node()
    assert node.call("GET", "/openapi.json", token=None).status_code == 401
    assert node.ok("GET", "/openapi.json") == document()


def test_real_answers_satisfy_the_schemas(admin_node: Any, example_components: dict[str, Path]) -> None:
    node = admin_node()
    doc = document()
    function = node.ok("POST", "/functions/hello/code", 201, content=example_components["hello"].read_bytes())
    node.ok("PUT", "/secrets/s", json={"value": "v"})
    node.ok("PUT", "/functions/hello/configuration", json={"secrets": {"S": "s"}, "env": {"A": "1"}})
    version = node.ok("POST", "/functions/hello/versions", 201)
    node.ok("POST", "/functions/hello/code", 200, content=example_components["stream"].read_bytes())
    node.ok("POST", "/functions/hello/versions", 201)
    alias = node.ok(
        "PUT", "/functions/hello/aliases/live", json={"version": 1, "additional_version_weights": {"2": 0.25}}
    )
    url = node.ok(
        "POST", "/functions/hello/urls", 201, json={"qualifier": "live", "cors": {"allow_origins": ["*"]}}
    )
    for name, value in [
        ("Function", function),
        ("Function", node.ok("GET", "/functions/hello")),
        ("Version", version),
        ("Alias", alias),
        ("FunctionUrl", url),
        ("Configuration", node.ok("GET", "/functions/hello/configuration")),
        ("Error", node.call("GET", "/functions/nope").json()),
        ("Error", node.call("GET", "/functions", token="bad").json()),
    ]:
        conforms(doc, name, value)
