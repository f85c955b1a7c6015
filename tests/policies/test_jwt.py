"""JWT matrix: every accepted algorithm, JWKS from a file and from a real loopback URL, forgeries."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from gateway.policies.auth import AuthFailure, AuthRequest, AuthSetupError, Principal, build_authenticator
from gateway.policies.auth.jwt_auth import JwksUrl, JwtAuth
from routes.config import Auth
from tests.policies.harness import PolicyApp, Served
from tests.policies.keys import EC_KEY, RSA_KEY, RSA_OTHER, RSA_PUBLIC_PEM, JwksServer, ec_jwk, rsa_jwk

SECRET = "s3cret-value-that-is-long-enough-for-hs512-0123456789-abcdefghijklmnopqrstuvwxyz"
ENV = {"JWT_SECRET": SECRET}


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base = {"sub": "user-1", "iss": "https://issuer.example", "aud": "api", "iat": now, "exp": now + 300}
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def request(token: str | None, scheme: str = "Bearer") -> AuthRequest:
    headers = {"authorization": f"{scheme} {token}"} if token is not None else {}
    return AuthRequest(method="GET", path="/", query_string="", headers=headers, body=None)


def check(auth: Any, token: str | None, scheme: str = "Bearer") -> Principal:
    return asyncio.run(auth.authenticate(request(token, scheme)))


def failure(auth: Any, token: str | None, scheme: str = "Bearer") -> AuthFailure:
    with pytest.raises(AuthFailure) as info:
        check(auth, token, scheme)
    assert info.value.status == 401
    return info.value


@pytest.fixture(scope="module")
def jwks_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("jwks") / "jwks.json"
    keys = [rsa_jwk(RSA_KEY, "rsa-1"), ec_jwk(EC_KEY, "ec-1"), rsa_jwk(RSA_KEY, "rsa-noalg", alg=None)]
    path.write_text(json.dumps({"keys": keys}))
    return path


def hs_auth(*algorithms: str, **kw: Any) -> Any:
    config = Auth(type="jwt", secret_env="JWT_SECRET", algorithms=algorithms or ("HS256",), **kw)
    return build_authenticator(config, ENV)


def jwks_auth(jwks_file: Path, *algorithms: str, **kw: Any) -> Any:
    return build_authenticator(Auth(type="jwt", jwks_file=jwks_file, algorithms=algorithms, **kw), {})


@pytest.mark.parametrize("alg", ["HS256", "HS384", "HS512"])
def test_hmac_algorithms_over_http(alg: str) -> None:
    auth = hs_auth(alg, audience="api", issuer="https://issuer.example")
    token = jwt.encode(claims(), SECRET, algorithm=alg)
    with Served(PolicyApp(auth)) as served:
        ok = httpx.get(served.url + "/x", headers={"authorization": f"Bearer {token}"})
        missing = httpx.get(served.url + "/x")
    assert ok.status_code == 200
    assert ok.json()["kind"] == "jwt" and ok.json()["id"] == "user-1"
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"] == "Bearer"
    assert missing.json()["error"]["code"] == "unauthorized"


def test_rs256_and_es256_from_jwks_file(jwks_file: Path) -> None:
    auth = jwks_auth(jwks_file, "RS256", "ES256", audience="api")
    rs = jwt.encode(claims(), RSA_KEY, algorithm="RS256", headers={"kid": "rsa-1"})
    es = jwt.encode(claims(sub="ec-user"), EC_KEY, algorithm="ES256", headers={"kid": "ec-1"})
    assert check(auth, rs).id == "user-1"
    principal = check(auth, es)
    assert principal.id == "ec-user" and principal.claims["aud"] == "api"


def test_jwk_without_alg_serves_the_pinned_rsa_algorithm(jwks_file: Path) -> None:
    auth = jwks_auth(jwks_file, "RS384")
    token = jwt.encode(claims(), RSA_KEY, algorithm="RS384", headers={"kid": "rsa-noalg"})
    assert check(auth, token).id == "user-1"
    # the key that declares RS256 refuses an RS384 token even though the key material fits
    mismatched = jwt.encode(claims(), RSA_KEY, algorithm="RS384", headers={"kid": "rsa-1"})
    assert "does not match" in failure(auth, mismatched).message


def _unsigned(payload: dict[str, Any], header: dict[str, Any]) -> str:
    def part(obj: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    return f"{part(header)}.{part(payload)}."


def test_forged_alg_none_is_refused(jwks_file: Path) -> None:
    for auth in (hs_auth("HS256"), jwks_auth(jwks_file, "RS256")):
        token = _unsigned(claims(), {"alg": "none", "typ": "JWT", "kid": "rsa-1"})
        assert "not accepted" in failure(auth, token).message


def test_none_cannot_be_configured() -> None:
    with pytest.raises(AuthSetupError) as info:
        hs_auth("none")
    assert info.value.key == "algorithms"


def _hs256_with_public_pem(payload: dict[str, Any]) -> str:
    # pyjwt refuses PEM keys as HMAC secrets, so forge the token by hand, as an attacker would.
    import hashlib
    import hmac

    def part(obj: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    signing_input = f"{part({'alg': 'HS256', 'typ': 'JWT', 'kid': 'rsa-1'})}.{part(payload)}"
    sig = hmac.new(RSA_PUBLIC_PEM, signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + base64.urlsafe_b64encode(sig).rstrip(b"=").decode()


def test_alg_confusion_hs256_signed_with_rsa_public_key(jwks_file: Path) -> None:
    token = _hs256_with_public_pem(claims())
    assert "not accepted" in failure(jwks_auth(jwks_file, "RS256"), token).message
    # even with HS256 also allowed, HMAC checks only against the configured secret
    both = build_authenticator(
        Auth(type="jwt", secret_env="JWT_SECRET", jwks_file=jwks_file, algorithms=("RS256", "HS256")), ENV
    )
    assert failure(both, token).message == "signature verification failed"
    assert (
        check(both, jwt.encode(claims(), RSA_KEY, algorithm="RS256", headers={"kid": "rsa-1"})).id == "user-1"
    )


def test_wrong_key(jwks_file: Path) -> None:
    auth = jwks_auth(jwks_file, "RS256")
    token = jwt.encode(claims(), RSA_OTHER, algorithm="RS256", headers={"kid": "rsa-1"})
    assert failure(auth, token).message == "signature verification failed"
    wrong_secret = jwt.encode(claims(), SECRET + "x", algorithm="HS256")
    assert failure(hs_auth("HS256"), wrong_secret).message == "signature verification failed"


def test_unknown_kid(jwks_file: Path) -> None:
    token = jwt.encode(claims(), RSA_KEY, algorithm="RS256", headers={"kid": "nope"})
    assert "kid" in failure(jwks_auth(jwks_file, "RS256"), token).message


def test_tampered_payload() -> None:
    token = jwt.encode(claims(), SECRET, algorithm="HS256")
    head, _, sig = token.split(".")
    forged_payload = base64.urlsafe_b64encode(json.dumps(claims(sub="admin")).encode()).rstrip(b"=").decode()
    assert failure(hs_auth(), f"{head}.{forged_payload}.{sig}").message == "signature verification failed"


@pytest.mark.parametrize(
    ("overrides", "config", "message"),
    [
        (lambda now: {"exp": now - 60}, {}, "token has expired"),
        (lambda now: {"nbf": now + 600}, {}, "token is not valid yet"),
        (lambda now: {"aud": "other"}, {"audience": "api"}, "token audience is not accepted"),
        (lambda now: {"aud": None}, {"audience": "api"}, "token lacks the aud claim"),
        (
            lambda now: {"iss": "https://evil.example"},
            {"issuer": "https://issuer.example"},
            "token issuer is not accepted",
        ),
        (lambda now: {"exp": None}, {}, "token lacks the exp claim"),
    ],
)
def test_claims_are_checked(
    overrides: Callable[[int], dict[str, Any]], config: dict[str, Any], message: str
) -> None:
    """The claims are made when the test runs, not when it is collected: a token made at
    collection expired (exp is 300 s out) before these ran late in a slow suite."""
    auth = hs_auth("HS256", **config)
    token_claims = claims(**overrides(int(time.time())))
    failed = failure(auth, jwt.encode(token_claims, SECRET, algorithm="HS256"))
    assert failed.message == message
    assert failed.www_authenticate == f'Bearer error="invalid_token", error_description="{message}"'


def test_leeway_accepts_small_clock_differences() -> None:
    now = int(time.time())
    late = jwt.encode(claims(exp=now - 10, nbf=now + 10), SECRET, algorithm="HS256")
    assert check(hs_auth("HS256", leeway_s=30), late).id == "user-1"
    assert failure(hs_auth("HS256"), late).status == 401


def test_malformed_or_missing_bearer() -> None:
    auth = hs_auth()
    assert failure(auth, None).www_authenticate == "Bearer"
    assert failure(auth, "abc", scheme="Basic").www_authenticate == "Bearer"
    assert failure(auth, "not-a-jwt").message == "malformed token"
    assert check(auth, jwt.encode(claims(), SECRET, algorithm="HS256"), scheme="bearer").id == "user-1"


def test_setup_errors_name_the_key(tmp_path: Path) -> None:
    with pytest.raises(AuthSetupError) as info:
        build_authenticator(Auth(type="jwt", secret_env="MISSING", algorithms=("HS256",)), {})
    assert info.value.key == "secret_env" and "MISSING" in info.value.message
    with pytest.raises(AuthSetupError) as info:
        build_authenticator(Auth(type="jwt", jwks_file=tmp_path / "absent.json", algorithms=("RS256",)), {})
    assert info.value.key == "jwks_file"
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(AuthSetupError) as info:
        build_authenticator(Auth(type="jwt", jwks_file=tmp_path / "bad.json", algorithms=("RS256",)), {})
    assert info.value.key == "jwks_file"
    with pytest.raises(AuthSetupError) as info:
        build_authenticator(Auth(type="jwt", algorithms=("RS256",)), {})
    assert info.value.key == "jwks_file"
    with pytest.raises(AuthSetupError) as info:
        build_authenticator(Auth(type="jwt", secret_env="JWT_SECRET"), ENV)
    assert info.value.key == "algorithms"


@pytest.fixture
def jwks_server() -> Iterator[JwksServer]:
    with JwksServer({"keys": [rsa_jwk(RSA_KEY, "k1")]}) as server:
        yield server


def test_jwks_url_is_fetched_lazily_once_and_cached(jwks_server: JwksServer) -> None:
    auth = build_authenticator(
        Auth(type="jwt", jwks_url=jwks_server.url, algorithms=("RS256",)), {}, http=httpx.AsyncClient()
    )
    assert jwks_server.fetches == 0  # nothing at start-up
    token = jwt.encode(claims(), RSA_KEY, algorithm="RS256", headers={"kid": "k1"})
    with Served(PolicyApp(auth)) as served, httpx.Client(base_url=served.url) as client:
        for _ in range(5):
            assert client.get("/", headers={"authorization": f"Bearer {token}"}).status_code == 200
        # unknown kids right after a fetch do not cause refetches (rate limit)
        stranger = jwt.encode(claims(), RSA_OTHER, algorithm="RS256", headers={"kid": "unknown"})
        for _ in range(5):
            assert client.get("/", headers={"authorization": f"Bearer {stranger}"}).status_code == 401
    assert jwks_server.fetches == 1


def test_jwks_url_refetches_on_unknown_kid_after_rotation(jwks_server: JwksServer) -> None:
    async def scenario() -> None:
        async with httpx.AsyncClient() as http:
            auth = JwtAuth(
                ("RS256",), None, JwksUrl(jwks_server.url, http, refetch_interval_s=0.2), None, None, 0
            )
            old = jwt.encode(claims(), RSA_KEY, algorithm="RS256", headers={"kid": "k1"})
            assert (await auth.authenticate(request(old))).id == "user-1"
            jwks_server.document = {"keys": [rsa_jwk(RSA_OTHER, "k2")]}
            new = jwt.encode(claims(sub="rotated"), RSA_OTHER, algorithm="RS256", headers={"kid": "k2"})
            with pytest.raises(AuthFailure):  # inside the rate-limit window the new kid is unknown
                await auth.authenticate(request(new))
            await asyncio.sleep(0.25)
            results = await asyncio.gather(*(auth.authenticate(request(new)) for _ in range(10)))
            assert {p.id for p in results} == {"rotated"}

    asyncio.run(scenario())
    assert jwks_server.fetches == 2  # ten concurrent requests shared one refetch


def test_jwks_url_unreachable_is_401_not_a_crash() -> None:
    async def scenario() -> AuthFailure:
        async with httpx.AsyncClient() as http:
            auth = JwtAuth(("RS256",), None, JwksUrl("http://127.0.0.1:9/jwks", http), None, None, 0)
            token = jwt.encode(claims(), RSA_KEY, algorithm="RS256", headers={"kid": "k1"})
            with pytest.raises(AuthFailure) as info:
                await auth.authenticate(request(token))
            return info.value

    assert asyncio.run(scenario()).status == 401
