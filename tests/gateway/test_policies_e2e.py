"""Route policies through a running gateway: CORS answered at the edge, auth in front of the origin."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import time

import httpx
import jwt
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from tests.servers import free_port

CONFIG = """
[node]
data_dir = "{data_dir}"

[origins.web]
endpoints = [{ url = "%(origin)s" }]

[origins.dead]
endpoints = [{ url = "http://127.0.0.1:%(dead)d" }]

[[routes]]
name = "cors-dead"
path = "/preflight-only/{*rest}"
origin = "dead"
cors = { allow_origins = ["https://app.example"], allow_methods = ["GET", "POST"], allow_headers = ["content-type"], max_age = 600 }

[[routes]]
name = "cors"
path = "/cors/{*rest}"
origin = "web"
rewrite = { path = "/{rest}" }
cors = { allow_origins = ["https://app.example"], expose_headers = ["x-request-id"], allow_credentials = true }

[[routes]]
name = "key"
path = "/key/{*rest}"
origin = "web"
rewrite = { path = "/{rest}" }
auth = { type = "api_key", header = "x-api-key", keys_env = "API_KEYS" }

[[routes]]
name = "jwt"
path = "/jwt/{*rest}"
origin = "web"
rewrite = { path = "/{rest}" }
auth = { type = "jwt", secret_env = "JWT_SECRET", algorithms = ["HS256"], audience = "api" }

[[routes]]
name = "iam"
path = "/iam/{*rest}"
origin = "web"
rewrite = { path = "/{rest}" }
auth = { type = "sigv4", credentials_env = "AWS_CREDS", region = "us-east-1" }
"""

ENV = {"API_KEYS": "k1,k2", "JWT_SECRET": "x" * 32, "AWS_CREDS": "AKIDEXAMPLE:wJalrXUtnFEMI/K7MDENG"}


@pytest.fixture
def url(origin, gateway) -> str:
    return gateway(CONFIG % {"origin": origin, "dead": free_port()}, env=ENV)


def test_preflight_is_answered_without_touching_the_target(url) -> None:
    r = httpx.options(
        f"{url}/preflight-only/x",
        headers={
            "origin": "https://app.example",
            "access-control-request-method": "POST",
            "access-control-request-headers": "content-type",
        },
    )
    assert r.status_code in (200, 204)  # the target is unreachable: only the gateway answered
    assert r.headers["access-control-allow-origin"] == "https://app.example"
    assert "POST" in r.headers["access-control-allow-methods"]
    assert r.headers["access-control-max-age"] == "600"
    assert "x-request-id" in r.headers


def test_cors_headers_on_actual_response_with_credentials(url) -> None:
    r = httpx.get(f"{url}/cors/echo", headers={"origin": "https://app.example"})
    assert r.status_code == 200
    assert r.headers["access-control-allow-origin"] == "https://app.example"
    assert r.headers["access-control-allow-credentials"] == "true"
    assert "origin" in r.headers["vary"].lower()
    assert "x-request-id" in r.headers["access-control-expose-headers"].lower()
    other = httpx.get(f"{url}/cors/echo", headers={"origin": "https://evil.example"})
    assert other.status_code == 200
    assert "access-control-allow-origin" not in other.headers
    assert "origin" in other.headers["vary"].lower()  # caches must not reuse it for the allowed origin


def test_preflight_carries_no_actual_response_headers(url) -> None:
    r = httpx.options(
        f"{url}/cors/echo", headers={"origin": "https://app.example", "access-control-request-method": "GET"}
    )
    assert r.headers["access-control-allow-origin"] == "https://app.example"
    assert "access-control-expose-headers" not in r.headers


def test_api_key(url) -> None:
    r = httpx.get(f"{url}/key/echo")
    assert r.status_code == 401
    assert "www-authenticate" in r.headers
    assert r.json()["error"]["request_id"] == r.headers["x-request-id"]
    assert httpx.get(f"{url}/key/echo", headers={"x-api-key": "nope"}).status_code in (401, 403)
    assert httpx.get(f"{url}/key/echo", headers={"x-api-key": "k2"}).status_code == 200


def test_jwt(url) -> None:
    good = jwt.encode({"aud": "api", "exp": int(time.time()) + 60}, ENV["JWT_SECRET"], algorithm="HS256")
    assert httpx.get(f"{url}/jwt/echo", headers={"authorization": f"Bearer {good}"}).status_code == 200
    wrong_aud = jwt.encode(
        {"aud": "other", "exp": int(time.time()) + 60}, ENV["JWT_SECRET"], algorithm="HS256"
    )
    r = httpx.get(f"{url}/jwt/echo", headers={"authorization": f"Bearer {wrong_aud}"})
    assert r.status_code == 401
    assert r.headers["www-authenticate"].startswith("Bearer")
    unsigned = jwt.encode({"aud": "api"}, None, algorithm="none")
    assert httpx.get(f"{url}/jwt/echo", headers={"authorization": f"Bearer {unsigned}"}).status_code == 401


def _signed(method: str, url: str, body: bytes, secret: str = "wJalrXUtnFEMI/K7MDENG") -> dict[str, str]:
    request = AWSRequest(
        method=method, url=url, data=body, headers={"content-type": "application/octet-stream"}
    )
    SigV4Auth(Credentials("AKIDEXAMPLE", secret), "lambda", "us-east-1").add_auth(request)
    return dict(request.headers.items())


def test_sigv4_botocore_with_body_reaches_origin_intact(url) -> None:
    body = bytes(range(256)) * 1000
    target = f"{url}/iam/echo/x?b=2&a=1"
    r = httpx.post(target, content=body, headers=_signed("POST", target, body))
    assert r.status_code == 200, r.text
    assert r.json()["body_sha256"] == hashlib.sha256(body).hexdigest()
    tampered = _signed("POST", target, body)
    r = httpx.post(target, content=body + b"!", headers=tampered)
    assert r.status_code == 403
    forged = _signed("POST", target, body, secret="not-the-secret")
    assert httpx.post(target, content=body, headers=forged).status_code == 403


def test_sigv4_declared_payload_hash_is_checked_while_streaming(url) -> None:
    body = b"signed body" * 1000
    target = f"{url}/iam/echo"
    request = AWSRequest(
        method="PUT",
        url=target,
        data=body,
        headers={"x-amz-content-sha256": hashlib.sha256(body).hexdigest()},
    )
    SigV4Auth(Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG"), "lambda", "us-east-1").add_auth(request)
    headers = dict(request.headers.items())
    assert (
        httpx.put(target, content=body, headers=headers).json()["body_sha256"]
        == hashlib.sha256(body).hexdigest()
    )
    # same signed headers, different body: the origin must never get a complete body
    r = httpx.put(target, content=b"x" * len(body), headers=headers)
    assert r.status_code == 403
    assert r.json()["error"]["code"] == "invalid_payload"


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_sigv4_curl(url) -> None:
    run = subprocess.run(
        [
            "curl",
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--aws-sigv4",
            "aws:amz:us-east-1:lambda",
            "--user",
            "AKIDEXAMPLE:wJalrXUtnFEMI/K7MDENG",
            "-d",
            "hello",
            f"{url}/iam/echo?q=1",
        ],
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert run.stdout == "200", run.stderr
