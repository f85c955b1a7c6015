"""CORS matrix over real HTTP: preflights answered without the target, headers on actual answers."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from gateway.policies.cors import CorsPolicy
from routes.config import Cors
from tests.policies.harness import PolicyApp, Served

APP = "https://app.example"


def serve(cors: Cors) -> Iterator[tuple[PolicyApp, httpx.Client]]:
    app = PolicyApp(cors=CorsPolicy(cors))
    with Served(app) as served, httpx.Client(base_url=served.url) as client:
        yield app, client


@pytest.fixture
def strict() -> Iterator[tuple[PolicyApp, httpx.Client]]:
    yield from serve(
        Cors(
            allow_origins=(APP, "http://localhost:60905/"),
            allow_methods=("GET", "post"),
            allow_headers=("Content-Type", "X-Custom"),
            expose_headers=("X-Request-Id", "ETag"),
            max_age=600,
        )
    )


@pytest.fixture
def wildcard() -> Iterator[tuple[PolicyApp, httpx.Client]]:
    yield from serve(Cors(allow_origins=("*",), allow_methods=("*",), allow_headers=("*",), max_age=0))


@pytest.fixture
def credentialed() -> Iterator[tuple[PolicyApp, httpx.Client]]:
    yield from serve(
        Cors(allow_origins=("*",), allow_methods=("*",), allow_headers=("*",), allow_credentials=True)
    )


def preflight(
    client: httpx.Client, origin: str, method: str = "POST", req_headers: str = ""
) -> httpx.Response:
    headers = {"origin": origin, "access-control-request-method": method}
    if req_headers:
        headers["access-control-request-headers"] = req_headers
    return client.options("/api/x", headers=headers)


def cors_headers(response: httpx.Response) -> dict[str, str]:
    return {k: v for k, v in response.headers.items() if k.startswith("access-control-")}


def test_preflight_for_allowed_origin_is_answered_without_the_target(
    strict: tuple[PolicyApp, httpx.Client],
) -> None:
    app, client = strict
    response = preflight(client, APP, "POST", "content-type")
    assert response.status_code == 200
    assert response.content == b""
    assert cors_headers(response) == {
        "access-control-allow-origin": APP,
        "access-control-allow-methods": "GET, POST",
        "access-control-allow-headers": "content-type, x-custom",
        "access-control-max-age": "600",
    }
    assert response.headers["vary"] == "origin"
    assert app.target_hits == 0 and app.requests == []


@pytest.mark.parametrize(
    "origin", ["https://evil.example", "https://app.example.evil", "http://app.example", "null"]
)
def test_preflight_for_other_origin_carries_no_cors_header(
    strict: tuple[PolicyApp, httpx.Client], origin: str
) -> None:
    app, client = strict
    response = preflight(client, origin)
    assert response.status_code == 200
    assert cors_headers(response) == {}
    assert response.headers["vary"] == "origin"
    assert app.target_hits == 0


def test_origin_matching_ignores_case_of_scheme_and_host_and_a_configured_slash(
    strict: tuple[PolicyApp, httpx.Client],
) -> None:
    _, client = strict
    response = preflight(client, "HTTPS://App.Example")
    assert response.headers["access-control-allow-origin"] == "HTTPS://App.Example"
    response = preflight(client, "http://localhost:60905")
    assert response.headers["access-control-allow-origin"] == "http://localhost:60905"
    assert cors_headers(preflight(client, "http://localhost:60906")) == {}


def test_preflight_for_disallowed_method_keeps_the_configured_list_for_the_browser_to_enforce(
    strict: tuple[PolicyApp, httpx.Client],
) -> None:
    _, client = strict
    response = preflight(client, APP, "DELETE", "x-other")
    assert response.headers["access-control-allow-methods"] == "GET, POST"
    assert "DELETE" not in response.headers["access-control-allow-methods"]
    assert response.headers["access-control-allow-headers"] == "content-type, x-custom"


def test_actual_response_for_allowed_origin(strict: tuple[PolicyApp, httpx.Client]) -> None:
    app, client = strict
    response = client.get("/api/x", headers={"origin": APP})
    assert response.status_code == 200
    assert cors_headers(response) == {
        "access-control-allow-origin": APP,
        "access-control-expose-headers": "x-request-id, etag",
    }
    assert response.headers["vary"] == "origin"
    assert app.target_hits == 1


def test_actual_response_for_other_origin_or_none_has_nothing(strict: tuple[PolicyApp, httpx.Client]) -> None:
    _, client = strict
    assert cors_headers(client.get("/api/x", headers={"origin": "https://evil.example"})) == {}
    assert cors_headers(client.get("/api/x")) == {}


def test_options_without_request_method_is_not_a_preflight(strict: tuple[PolicyApp, httpx.Client]) -> None:
    app, client = strict
    response = client.options("/api/x", headers={"origin": APP})
    assert response.status_code == 200
    assert app.target_hits == 1  # went to the target like any OPTIONS request


def test_wildcard_without_credentials_sends_star_and_no_vary(
    wildcard: tuple[PolicyApp, httpx.Client],
) -> None:
    _, client = wildcard
    response = preflight(client, "https://any.example", "PUT", "x-a, x-b")
    assert cors_headers(response) == {
        "access-control-allow-origin": "*",
        "access-control-allow-methods": "*",
        "access-control-allow-headers": "*",
        "access-control-max-age": "0",
    }
    assert "vary" not in response.headers
    actual = client.get("/", headers={"origin": "https://any.example"})
    assert actual.headers["access-control-allow-origin"] == "*"
    assert "access-control-expose-headers" not in actual.headers


def test_credentials_never_with_star(credentialed: tuple[PolicyApp, httpx.Client]) -> None:
    _, client = credentialed
    response = preflight(client, "https://any.example", "put", "X-A, x-b")
    headers = cors_headers(response)
    assert headers == {
        "access-control-allow-origin": "https://any.example",
        "access-control-allow-credentials": "true",
        "access-control-allow-methods": "PUT",
        "access-control-allow-headers": "x-a, x-b",
    }
    assert "*" not in "".join(headers.values())
    assert response.headers["vary"] == "origin, access-control-request-method, access-control-request-headers"
    actual = client.post("/", headers={"origin": "https://any.example"})
    assert cors_headers(actual) == {
        "access-control-allow-origin": "https://any.example",
        "access-control-allow-credentials": "true",
    }
    assert actual.headers["vary"] == "origin"


def test_policy_without_origins_allows_nothing() -> None:
    policy = CorsPolicy(Cors())
    headers = {"origin": APP, "access-control-request-method": "GET"}
    assert policy.is_preflight("options", headers)
    status, out = policy.preflight(headers)
    assert status == 200 and [k for k, _ in out] == ["vary"]
    assert policy.response_headers({"Origin": APP}) == []
    assert policy.vary_origin
