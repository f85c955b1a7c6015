"""api_key and none over real HTTP: header from config, keys from env, constant-time compare."""

from __future__ import annotations

import hmac
from collections.abc import Iterator

import httpx
import pytest

from gateway.policies.auth import AuthSetupError, NoAuth, build_authenticator
from gateway.policies.auth.api_key import ApiKeyAuth
from routes.config import Auth
from tests.policies.harness import PolicyApp, Served

ENV = {"API_KEYS": "key-one, key-two,,  key-thrée "}


@pytest.fixture(scope="module")
def client() -> Iterator[httpx.Client]:
    auth = build_authenticator(Auth(type="api_key", header="X-Edge-Key", keys_env="API_KEYS"), ENV)
    with Served(PolicyApp(auth)) as served, httpx.Client(base_url=served.url) as c:
        yield c


@pytest.mark.parametrize(("key", "index"), [("key-one", 0), ("key-two", 1)])
def test_each_configured_key_is_accepted(client: httpx.Client, key: str, index: int) -> None:
    response = client.get("/", headers={"x-edge-key": key})
    assert response.status_code == 200
    body = response.json()
    assert body["kind"] == "api_key" and body["claims"]["key_index"] == index
    assert key.strip() not in body["id"]  # a fingerprint, never the key


def test_non_ascii_key_compares_as_the_bytes_sent(client: httpx.Client) -> None:
    response = client.get("/", headers=[(b"x-edge-key", "key-thrée".encode())])
    assert response.status_code == 200


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"x-edge-key": "key-on"},
        {"x-edge-key": "key-one-and-more"},
        {"x-api-key": "key-one"},
        {"x-edge-key": ""},
    ],
)
def test_missing_or_wrong_key_is_401_with_challenge(client: httpx.Client, headers: dict[str, str]) -> None:
    response = client.get("/", headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'ApiKey header="x-edge-key"'
    assert response.json()["error"]["code"] == "unauthorized"


def test_every_key_is_compared(monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio

    from gateway.policies.auth import AuthRequest

    calls: list[bytes] = []
    real = hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        calls.append(b)
        return real(a, b)

    monkeypatch.setattr("gateway.policies.auth.api_key.hmac.compare_digest", counting)
    auth = ApiKeyAuth("x-api-key", ["a", "b", "c"])
    request = AuthRequest("GET", "/", "", {"x-api-key": "a"}, None)
    assert asyncio.run(auth.authenticate(request)).claims["key_index"] == 0
    assert calls == [b"a", b"b", b"c"]  # no early exit on the first match


def test_setup_errors() -> None:
    with pytest.raises(AuthSetupError) as info:
        build_authenticator(Auth(type="api_key", keys_env="API_KEYS"), {})
    assert info.value.key == "keys_env" and "API_KEYS" in info.value.message
    with pytest.raises(AuthSetupError) as info:
        build_authenticator(Auth(type="api_key", keys_env="API_KEYS"), {"API_KEYS": " , "})
    assert info.value.key == "keys_env"
    with pytest.raises(AuthSetupError) as info:
        build_authenticator(Auth(type="api_key"), ENV)
    assert info.value.key == "keys_env"


def test_none_lets_everyone_through() -> None:
    auth = build_authenticator(Auth(), {})
    assert isinstance(auth, NoAuth) and not auth.needs_body
    with Served(PolicyApp(auth)) as served:
        response = httpx.get(served.url + "/anything")
    assert response.status_code == 200 and response.json()["kind"] == "anonymous"
