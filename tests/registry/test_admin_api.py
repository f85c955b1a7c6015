"""The registry's admin API over real HTTP against a running gateway (docs/functions.md, Registry)."""

from __future__ import annotations

import http.client
import json
import logging
from collections.abc import Callable
from pathlib import Path

import pytest
from starlette.routing import Route

from gateway.admin import functions_api
from gateway.admin.app import admin_app
from tests.registry.conftest import AdminNode

Start = Callable[..., AdminNode]


@pytest.fixture
def node(admin_node: Start) -> AdminNode:
    return admin_node()


def deploy(node: AdminNode, name: str, path: Path, status: int = 201) -> dict:
    return node.ok("POST", f"/functions/{name}/code", status, content=path.read_bytes())


def snapshot(node: AdminNode) -> tuple[object, object, list[str]]:
    """Everything a refused change must leave as it was: the API's view and the files."""
    assert node.gateway is not None
    data_dir = node.gateway.config.node.data_dir
    files = sorted(p.name for p in (data_dir / "components").iterdir())
    uploads = data_dir / "uploads"
    assert not uploads.exists() or not any(uploads.iterdir()), "an upload was left behind"
    return node.ok("GET", "/functions"), node.ok("GET", "/urls"), files


def test_every_registry_route_needs_the_token(node: AdminNode) -> None:
    app = admin_app(node.gateway)  # type: ignore[arg-type]
    routes = [r for r in app.routes if isinstance(r, Route) and r.path != "/healthz"]
    assert len(routes) > 20
    for route in routes:
        path = route.path.replace("{name}", "hello").replace("{alias}", "live").replace("{version}", "1")
        path = path.replace("{id}", "x")
        for method in route.methods or ():
            if method == "HEAD":
                continue
            for token in (None, "wrong"):
                r = node.call(method, path, token=token)
                assert r.status_code == 401, f"{method} {path} with token {token!r}: {r.status_code}"
                assert r.json()["error"]["code"] == "unauthorized"
                assert r.headers["www-authenticate"].startswith("Bearer")


def test_deploy_the_example_component(node: AdminNode, example_components: dict[str, Path]) -> None:
    info = deploy(node, "hello", example_components["hello"])
    assert info["name"] == "hello" and info["source"] == "registry"
    assert info["code_size"] == example_components["hello"].stat().st_size
    assert [f["name"] for f in node.ok("GET", "/functions")["functions"]] == ["hello"]
    assert node.ok("GET", "/functions/hello")["code_sha256"] == info["code_sha256"]
    again = deploy(node, "hello", example_components["stream"], status=200)
    assert again["code_sha256"] != info["code_sha256"]


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"", "the body is empty"),
        (b"hello, not wasm", "not a WebAssembly binary"),
        (b"\0asm\x01\0\0\0", "a core WebAssembly module, not a component"),
    ],
)
def test_a_file_that_is_not_a_component_is_refused_and_nothing_changes(
    node: AdminNode, example_components: dict[str, Path], body: bytes, reason: str
) -> None:
    deploy(node, "hello", example_components["hello"])
    before = snapshot(node)
    for name in ("hello", "fresh"):
        r = node.call("POST", f"/functions/{name}/code", content=body)
        assert r.status_code == 400, r.text
        assert reason in r.json()["error"]["message"]
    assert snapshot(node) == before
    assert node.call("GET", "/functions/fresh").status_code == 404


def test_a_truncated_component_is_refused_with_the_compiler_reason(
    node: AdminNode, example_components: dict[str, Path]
) -> None:
    deploy(node, "hello", example_components["hello"])
    before = snapshot(node)
    whole = example_components["hello"].read_bytes()
    r = node.call("POST", "/functions/hello/code", content=whole[: len(whole) * 2 // 3])
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["code"] == "invalid_component" and error["message"].startswith("not deployed: ")
    assert snapshot(node) == before


def test_an_upload_over_the_limit_is_413(node: AdminNode, monkeypatch: pytest.MonkeyPatch) -> None:
    host, port = node.admin.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    conn.putrequest("POST", "/functions/big/code")
    conn.putheader("authorization", "Bearer registry-t0ken")
    conn.putheader("content-length", str(functions_api.MAX_CODE_BYTES + 1))
    conn.endheaders()  # no body: the declared length alone is refused
    response = conn.getresponse()
    assert response.status == 413
    conn.close()
    # a chunked upload (no length up front) is cut off once it passes the limit
    before = snapshot(node)
    monkeypatch.setattr(functions_api, "MAX_CODE_BYTES", 1000)
    r = node.call("POST", "/functions/big/code", content=iter([b"\0asm" + b"x" * 600, b"y" * 600]))
    assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"
    assert snapshot(node) == before


def test_publish_versions_and_aliases(node: AdminNode, example_components: dict[str, Path]) -> None:
    deploy(node, "hello", example_components["hello"])
    v1 = node.ok("POST", "/functions/hello/versions", 201, json={"description": "first"})
    assert (v1["version"], v1["description"]) == (1, "first")
    assert node.ok("POST", "/functions/hello/versions", 201)["version"] == 1  # nothing changed
    deploy(node, "hello", example_components["stream"], status=200)
    assert node.ok("POST", "/functions/hello/versions", 201)["version"] == 2
    assert [v["version"] for v in node.ok("GET", "/functions/hello/versions")["versions"]] == [1, 2]

    alias = node.ok("PUT", "/functions/hello/aliases/live", json={"version": 1})
    assert alias == {"name": "live", "version": 1, "additional_version_weights": {}, "description": ""}
    for body, status, text in [
        ({"version": 1, "additional_version_weights": {"2": 1.5}}, 400, "must be > 0 and < 1"),
        ({"version": 1, "additional_version_weights": {"2": 0.1, "3": 0.1}}, 400, "at most one"),
        ({"version": 1, "additional_version_weights": {"two": 0.1}}, 400, "not a version number"),
        ({"version": 1, "additional_version_weights": {"9": 0.1}}, 404, "no version 9"),
        ({"version": 9}, 404, "no version 9"),
        ({"version": "latest"}, 400, "version: required"),
        ({"version": 1, "weights": {}}, 400, "weights: unknown key"),
    ]:
        r = node.call("PUT", "/functions/hello/aliases/live", json=body)
        assert (r.status_code, text in r.json()["error"]["message"]) == (status, True), (body, r.text)
    r = node.call("PUT", "/functions/hello/aliases/7", json={"version": 1})
    assert r.status_code == 400 and "not all digits" in r.json()["error"]["message"]

    weighted = node.ok(
        "PUT", "/functions/hello/aliases/live", json={"version": 1, "additional_version_weights": {"2": 0.3}}
    )
    assert weighted["additional_version_weights"] == {"2": 0.3}
    assert node.ok("GET", "/functions/hello/aliases/live") == weighted
    assert node.ok("GET", "/functions/hello/aliases") == {"aliases": [weighted]}
    r = node.call("DELETE", "/functions/hello/versions/2")
    assert r.status_code == 409 and "used by alias live" in r.json()["error"]["message"]
    node.ok("PUT", "/functions/hello/aliases/live", json={"version": 2})
    assert node.call("DELETE", "/functions/hello/versions/1").status_code == 204
    assert node.call("DELETE", "/functions/hello/versions/1").status_code == 404
    assert node.call("DELETE", "/functions/hello/versions/x").status_code == 400
    assert node.call("DELETE", "/functions/hello/aliases/live").status_code == 204
    assert node.call("GET", "/functions/hello/aliases/live").status_code == 404


def test_code_and_configuration_land_together(node: AdminNode, example_components: dict[str, Path]) -> None:
    hello = example_components["hello"].read_bytes()
    settings = {"x-edgefn-configuration": json.dumps({"memory_mb": 256, "env": {"WHO": "v1"}})}
    info = node.ok("POST", "/functions/hello/code", 201, content=hello, headers=settings)
    assert (info["config"]["memory_mb"], info["config"]["env"]) == (256, {"WHO": "v1"})
    before = snapshot(node)
    stream = example_components["stream"].read_bytes()
    for header, text in [
        (json.dumps({"secrets": {"TOKEN": "missing"}}), "secret 'missing' does not exist"),
        (json.dumps({"memory_mb": 1}), "memory_mb"),
        ("{not json", "is not JSON"),
        ("[1]", "must be a JSON object"),
    ]:
        r = node.call("POST", "/functions/hello/code", content=stream, headers={"x-edgefn-configuration": header})
        assert r.status_code == 400 and text in r.json()["error"]["message"], (header, r.text)
        assert snapshot(node) == before  # neither the code nor the settings moved
    changed = node.ok("POST", "/functions/hello/code", 200, content=stream, headers={"x-edgefn-configuration": "{}"})
    assert changed["config"] == info["config"] and changed["code_sha256"] != info["code_sha256"]


def test_configuration(node: AdminNode, example_components: dict[str, Path]) -> None:
    deploy(node, "hello", example_components["hello"])
    config = node.ok("PUT", "/functions/hello/configuration", json={"memory_mb": 256, "env": {"A": "1"}})
    assert (config["memory_mb"], config["env"], config["timeout_s"]) == (256, {"A": "1"}, 10.0)
    assert node.ok("GET", "/functions/hello/configuration") == config
    for body, text in [
        ({"memory_mb": 8}, "memory_mb: 8 is out of range"),
        ({"env": {"BIG": "x" * 4094}}, "4097 bytes"),
        ({"timeout_s": 901}, "timeout_s"),
        ({"memroy_mb": 1}, "memroy_mb: unknown configuration key"),
        ({"secrets": {"DB": "nope"}}, "secret 'nope' does not exist"),
    ]:
        r = node.call("PUT", "/functions/hello/configuration", json=body)
        assert r.status_code == 400 and text in r.json()["error"]["message"], r.text
    r = node.call("PUT", "/functions/hello/configuration", content=b"{not json")
    assert r.status_code == 400 and "not JSON" in r.json()["error"]["message"]
    assert node.ok("GET", "/functions/hello/configuration") == config
    assert node.call("PUT", "/functions/nope/configuration", json={}).status_code == 404


def test_secrets_never_come_back(
    node: AdminNode, example_components: dict[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    value = "sup3r-s3cret-value-do-not-show"
    assert node.ok("PUT", "/secrets/db-pass", json={"value": value}) == {"name": "db-pass"}
    deploy(node, "hello", example_components["hello"])
    node.ok("PUT", "/functions/hello/configuration", json={"secrets": {"DB_PASSWORD": "db-pass"}})
    node.ok("POST", "/functions/hello/versions", 201)
    answers = [
        node.call("GET", "/secrets"),
        node.call("GET", "/functions"),
        node.call("GET", "/functions/hello"),
        node.call("GET", "/functions/hello/configuration"),
        node.call("GET", "/functions/hello/versions"),
        node.call("PUT", "/secrets/db-pass", json={"value": value}),
    ]
    assert answers[0].json() == {"secrets": ["db-pass"]}
    assert answers[3].json()["secrets"] == {"DB_PASSWORD": "db-pass"}
    for r in answers:
        assert value not in r.text
    assert value not in caplog.text
    r = node.call("DELETE", "/secrets/db-pass")
    assert r.status_code == 409 and "hello:$LATEST" in r.json()["error"]["message"]
    r = node.call("PUT", "/secrets/db-pass", json={"value": 1})
    assert r.status_code == 400 and value not in r.text
    assert node.call("PUT", "/secrets/bad name", json={"value": "x"}).status_code == 400
    node.ok("DELETE", "/functions/hello", 204)
    node.ok("DELETE", "/secrets/db-pass", 204)
    assert node.ok("GET", "/secrets") == {"secrets": []}


def test_function_urls_and_their_ids_survive_a_restart(
    admin_node: Start, example_components: dict[str, Path]
) -> None:
    node = admin_node(
        f"""
        [functions.greet]
        component = "{example_components["hello"]}"
        url = {{ auth = "none", invoke_mode = "RESPONSE_STREAM" }}
        """.replace("\n        ", "\n")
    )
    deploy(node, "hello", example_components["hello"])
    node.ok("POST", "/functions/hello/versions", 201)
    node.ok("PUT", "/functions/hello/aliases/live", json={"version": 1})
    plain = node.ok("POST", "/functions/hello/urls", 201)
    assert plain["url"] == f"http://{plain['url_id']}.fn.test:{node.port}/"
    assert (plain["qualifier"], plain["auth"], plain["invoke_mode"]) == (None, {"type": "none"}, "BUFFERED")
    live = node.ok(
        "POST",
        "/functions/hello/urls",
        201,
        json={
            "qualifier": "live",
            "auth": {"type": "sigv4", "credentials_env": "CREDS"},
            "cors": {"allow_origins": ["https://app.example"]},
        },
    )
    assert live["auth"]["type"] == "sigv4" and live["cors"]["allow_origins"] == ["https://app.example"]
    r = node.call("POST", "/functions/hello/urls", json={})
    assert r.status_code == 409 and "already has a Function URL" in r.json()["error"]["message"]
    for body, text in [
        ({"auth": "jwt"}, "auth"),
        ({"invoke_mode": "FAST"}, "invoke_mode"),
        ({"qualifier": "3"}, "not at a version"),
        ({"cors": {"allow_origins": ["not an origin"]}}, "allow_origins"),
    ]:
        r = node.call("POST", "/functions/hello/urls", json=body)
        assert r.status_code == 400 and text in r.json()["error"]["message"], r.text
    updated = node.ok("PUT", "/functions/hello/urls?qualifier=live", json={"invoke_mode": "RESPONSE_STREAM"})
    assert updated["url_id"] == live["url_id"] and updated["auth"]["type"] == "sigv4"

    urls = node.ok("GET", "/urls")["urls"]
    greet = next(u for u in urls if u["function"] == "greet")
    assert greet["invoke_mode"] == "RESPONSE_STREAM"
    assert {u["url_id"] for u in urls} == {plain["url_id"], live["url_id"], greet["url_id"]}
    r = node.call("POST", "/functions/greet/code", content=example_components["hello"].read_bytes())
    assert r.status_code == 409 and "defined in edgefn.toml" in r.json()["error"]["message"]

    node.restart()
    assert node.ok("GET", "/urls")["urls"] == urls
    assert node.ok("GET", "/functions/hello/urls")["urls"] == [plain, updated]
    node.ok("DELETE", "/functions/hello/urls?qualifier=live", 204)
    assert node.call("DELETE", "/functions/hello/urls?qualifier=live").status_code == 404
    assert [u["url_id"] for u in node.ok("GET", "/functions/hello/urls")["urls"]] == [plain["url_id"]]


def test_delete_a_function(node: AdminNode, example_components: dict[str, Path]) -> None:
    deploy(node, "hello", example_components["hello"])
    node.ok("POST", "/functions/hello/urls", 201)
    node.ok("DELETE", "/functions/hello", 204)
    assert node.call("GET", "/functions/hello").status_code == 404
    assert node.ok("GET", "/urls") == {"urls": []}
    r = node.call("DELETE", "/functions/hello")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
