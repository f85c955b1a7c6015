"""SigV4 matrix: real signatures from botocore and from `curl --aws-sigv4`, sent over loopback HTTP.

The gateway-side verifier never shares code with the signers: botocore's `SigV4Auth` and curl each
compute their own canonical request, which is the point (they disagree on path and query forms).
"""

from __future__ import annotations

import asyncio
import dataclasses
import http.client
import json
import shutil
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import pytest
from botocore.auth import SigV4Auth as BotoSigV4
from botocore.auth import SigV4QueryAuth as BotoSigV4Query
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from hypothesis import example, given, settings
from hypothesis import strategies as st
from starlette.datastructures import Headers

from gateway.policies.auth import AuthFailure, AuthRequest, AuthSetupError, build_authenticator
from gateway.policies.auth.sigv4 import SigV4Auth, checked_body
from routes.config import Auth
from tests.policies.harness import PolicyApp, Served

KEY_ID, SECRET = "AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
ENV = {"EDGEFN_CREDENTIALS": f"AKIDOTHER:other-secret, {KEY_ID}:{SECRET}"}
CONFIG = Auth(type="sigv4", credentials_env="EDGEFN_CREDENTIALS", region="us-east-1")


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[PolicyApp, Served]]:
    app = PolicyApp(build_authenticator(CONFIG, ENV))
    with Served(app) as server:
        yield app, server


def send_signed(
    server: Served,
    method: str,
    path_and_query: str,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    *,
    token: str | None = None,
    region: str = "us-east-1",
    service: str = "lambda",
    secret: str = SECRET,
    key_id: str = KEY_ID,
    tamper: dict[str, str] | None = None,
) -> tuple[int, dict[str, Any]]:
    """Sign with botocore, send the exact bytes with http.client (no URL re-normalisation)."""
    request = AWSRequest(method=method, url=server.url + path_and_query, data=body, headers=headers or {})
    BotoSigV4(Credentials(key_id, secret, token), service, region).add_auth(request)
    prepared = request.prepare()
    sent = {k.lower(): v for k, v in prepared.headers.items()}
    sent.update(tamper or {})
    # like urllib3, escape what may not appear on the request line (spaces, non-ASCII) and no more
    target = quote(prepared.url[len(server.url) :], safe="/?&=%:@!$'()*+,;~")
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        conn.request(method, target, body=prepared.body, headers=sent)
        response = conn.getresponse()
        return response.status, json.loads(response.read() or b"{}")
    finally:
        conn.close()


@pytest.mark.parametrize(
    ("method", "path", "body", "headers"),
    [
        ("GET", "/2015-03-31/functions/f/invocations?b=2&a=1&a=0&empty=&x=%2F%20y", b"", {}),
        ("POST", "/fn", b'{"hello": "world"}', {"content-type": "application/json"}),
        ("PUT", "/fn/a%20b/%C3%A9t%C3%A9/x:y", b"data", {}),
        ("GET", "/fn/a b/été", b"", {}),  # botocore given a raw URL: it single-encodes
        ("DELETE", "/fn/./dir/../x//y/", b"", {}),
        ("POST", "/fn", b"x" * 100_000, {"x-amz-content-sha256": "UNSIGNED-PAYLOAD"}),
        ("POST", "/fn", b"streamed", {"x-custom": "  spaced   out  value "}),
    ],
)
def test_botocore_signed_requests_verify(
    served: tuple[PolicyApp, Served], method: str, path: str, body: bytes, headers: dict[str, str]
) -> None:
    _, server = served
    status, payload = send_signed(server, method, path, body, headers)
    assert status == 200, payload
    assert payload["kind"] == "sigv4" and payload["id"] == KEY_ID
    assert payload["claims"]["region"] == "us-east-1"


def test_security_token_is_signed_and_allowed(served: tuple[PolicyApp, Served]) -> None:
    _, server = served
    status, payload = send_signed(server, "GET", "/fn", token="session-token-123")
    assert status == 200, payload
    assert "x-amz-security-token" in payload["claims"]["signed_headers"]
    assert payload["claims"]["session_token"] is True


@pytest.mark.parametrize(
    ("kwargs", "code"),
    [
        ({"tamper": {"x-custom": "changed"}, "headers": {"x-custom": "original"}}, "invalid_signature"),
        ({"secret": "not-the-secret"}, "invalid_signature"),
        ({"key_id": "AKIDUNKNOWN"}, "unrecognized_client"),
        ({"region": "eu-west-1"}, "invalid_signature"),
        ({"service": "s3"}, "invalid_signature"),
        ({"tamper": {"authorization": ""}}, "missing_authentication_token"),
        ({"tamper": {"authorization": "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/x"}}, "incomplete_signature"),
        ({"tamper": {"authorization": "Basic dXNlcjpwYXNz"}}, "incomplete_signature"),
        ({"tamper": {"x-amz-date": "20261399T250000Z"}}, "incomplete_signature"),
        ({"tamper": {"x-amz-date": "yesterday"}}, "incomplete_signature"),
    ],
)
def test_tampered_or_wrong_requests_are_403(
    served: tuple[PolicyApp, Served], kwargs: dict[str, Any], code: str
) -> None:
    _, server = served
    status, payload = send_signed(server, "POST", "/fn?q=1", b"body", **kwargs)
    assert status == 403
    assert payload["error"]["code"] == code


def test_changed_body_query_path_or_method_fail(served: tuple[PolicyApp, Served]) -> None:
    app, server = served
    status, _ = send_signed(server, "POST", "/fn/x?q=1&r=2", b"original body")
    assert status == 200
    good = app.requests[-1]
    auth = app.authenticator
    for changed in (
        dataclasses.replace(good, body=b"Original body"),
        dataclasses.replace(good, query_string="q=1&r=3"),
        dataclasses.replace(good, query_string="q=1"),
        dataclasses.replace(good, path="/fn/y"),
        dataclasses.replace(good, method="PUT"),
        dataclasses.replace(good, headers=Headers({**dict(good.headers), "host": "evil.example"})),
    ):
        with pytest.raises(AuthFailure) as info:
            asyncio.run(auth.authenticate(changed))
        assert (info.value.status, info.value.code) == (403, "invalid_signature")
    # the untouched capture still verifies, so the failures above are due to the changes
    assert asyncio.run(auth.authenticate(good)).id == KEY_ID


def test_clock_skew_of_five_minutes_each_way(
    served: tuple[PolicyApp, Served], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, server = served
    real_now = datetime.now(UTC).replace(tzinfo=None)
    for offset, expected in ((-290, 200), (290, 200), (-400, 403), (400, 403)):
        signed_at = real_now + timedelta(seconds=offset)
        monkeypatch.setattr("botocore.auth.get_current_datetime", lambda at=signed_at: at)
        status, payload = send_signed(server, "GET", "/fn")
        assert status == expected, (offset, payload)
        if expected == 403:
            code = "signature_expired" if offset < 0 else "signature_not_yet_current"
            assert payload["error"]["code"] == code
            assert "Signature" in payload["error"]["message"]


def test_date_header_instead_of_x_amz_date() -> None:
    auth = SigV4Auth({KEY_ID: SECRET}, "lambda", None)
    now = datetime.now(UTC)
    request = AWSRequest(method="GET", url="http://fn.local/x?a=1", headers={"host": "fn.local"})
    signer = BotoSigV4(Credentials(KEY_ID, SECRET), "lambda", "us-east-1")
    request.context["timestamp"] = now.strftime("%Y%m%dT%H%M%SZ")
    request.headers["date"] = now.strftime("%a, %d %b %Y %H:%M:%S GMT")
    canonical = signer.canonical_request(request)
    signature = signer.signature(signer.string_to_sign(request, canonical), request)
    request.headers["authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={KEY_ID}/{now:%Y%m%d}/us-east-1/lambda/aws4_request, "
        f"SignedHeaders=date;host, Signature={signature}"
    )
    captured = AuthRequest("GET", "/x", "a=1", Headers(dict(request.headers.items())), b"")
    principal = asyncio.run(auth.authenticate(captured))
    assert principal.id == KEY_ID and principal.claims["region"] == "us-east-1"  # any region when unset


def test_unsigned_date_or_host_is_refused(served: tuple[PolicyApp, Served]) -> None:
    app, server = served
    assert send_signed(server, "GET", "/fn")[0] == 200
    good = app.requests[-1]
    authorization = good.headers["authorization"].replace("host;x-amz-date", "x-amz-date")
    changed = dataclasses.replace(
        good, headers=Headers({**dict(good.headers), "authorization": authorization})
    )
    with pytest.raises(AuthFailure) as info:
        asyncio.run(app.authenticator.authenticate(changed))
    assert info.value.code == "incomplete_signature"


def test_signed_payload_hash_is_enforced_while_streaming(served: tuple[PolicyApp, Served]) -> None:
    app, server = served
    body = b"chunk-1|chunk-2"
    import hashlib

    declared = hashlib.sha256(body).hexdigest()
    status, payload = send_signed(server, "POST", "/fn", body, {"x-amz-content-sha256": declared})
    assert status == 200
    assert app.requests[-1].body is None  # the gateway did not need the body
    assert payload["claims"]["payload_sha256"] == declared

    async def drain(chunks: list[bytes]) -> list[bytes]:
        async def source() -> Any:
            for c in chunks:
                yield c

        return [c async for c in checked_body(source(), declared)]

    assert asyncio.run(drain([b"chunk-1|", b"chunk-2"])) == [b"chunk-1|", b"chunk-2"]
    with pytest.raises(AuthFailure) as info:
        asyncio.run(drain([b"chunk-1|", b"chunk-X"]))
    assert info.value.code == "invalid_payload"


def test_setup_errors_name_the_key() -> None:
    with pytest.raises(AuthSetupError) as info:
        build_authenticator(CONFIG, {})
    assert info.value.key == "credentials_env"
    with pytest.raises(AuthSetupError) as info:
        build_authenticator(CONFIG, {"EDGEFN_CREDENTIALS": "no-colon-here"})
    assert info.value.key == "credentials_env" and "ACCESS_KEY_ID:SECRET" in info.value.message


CURL = shutil.which("curl")


def curl(server: Served, *args: str, user: str = f"{KEY_ID}:{SECRET}", region: str = "us-east-1") -> str:
    assert CURL is not None
    out = subprocess.run(
        [CURL, "-sS", "--max-time", "10", "--aws-sigv4", f"aws:amz:{region}:lambda", "--user", user,
         "-w", "\n%{http_code}", *args],
        capture_output=True, text=True, timeout=20, check=True,
    ).stdout  # fmt: skip
    return out


@pytest.mark.skipif(CURL is None, reason="curl is not installed")
@pytest.mark.parametrize(
    "args",
    [
        ["/fn?z=1&a=%20b&flag"],
        ["-d", "hello=1&x=2", "/fn/post"],
        ["--data-binary", "line1\nl\u00efne2 ", "-H", "content-type: text/plain", "/fn/bin"],
        ["/fn/a%20b/%C3%A9/x:y"],
        ["-X", "DELETE", "/fn/item"],
        ["-H", "x-amz-security-token: session-token", "/fn"],
    ],
)
def test_curl_aws_sigv4_verifies(served: tuple[PolicyApp, Served], args: list[str]) -> None:
    _, server = served
    args = [server.url + a if a.startswith("/") else a for a in args]
    out = curl(server, *args)
    body, _, status = out.rpartition("\n")
    assert status == "200", body


@pytest.mark.skipif(CURL is None, reason="curl is not installed")
def test_curl_with_wrong_secret_region_or_key_is_403(served: tuple[PolicyApp, Served]) -> None:
    _, server = served
    for kwargs in ({"user": f"{KEY_ID}:wrong"}, {"region": "eu-west-1"}, {"user": f"AKIDNOPE:{SECRET}"}):
        out = curl(server, server.url + "/fn", **kwargs)
        assert out.rpartition("\n")[2] == "403", kwargs


@pytest.mark.skipif(CURL is None, reason="curl is not installed")
def test_curl_capture_replayed_with_changed_body_fails(served: tuple[PolicyApp, Served]) -> None:
    app, server = served
    out = curl(server, "-d", "amount=10", server.url + "/fn/pay")
    assert out.rpartition("\n")[2] == "200"
    captured = app.requests[-1]
    assert captured.body == b"amount=10"
    with pytest.raises(AuthFailure):
        asyncio.run(app.authenticator.authenticate(dataclasses.replace(captured, body=b"amount=99")))
    # six minutes later the same capture is a replay outside the window
    later = datetime.now(UTC) + timedelta(minutes=6)
    with pytest.raises(AuthFailure) as info:
        asyncio.run(app.authenticator.authenticate(captured, now=later))  # type: ignore[call-arg]
    assert info.value.code == "signature_expired"


def test_garbage_signature_is_a_clean_403(served: tuple[PolicyApp, Served]) -> None:
    app, server = served
    assert send_signed(server, "GET", "/fn")[0] == 200
    good = app.requests[-1]
    for signature in ("Signature=\u00e9\u00e9", "Signature=" + "0" * 64, "Signature=abc"):
        authorization = good.headers["authorization"].rsplit("Signature=", 1)[0] + signature
        changed = dataclasses.replace(
            good, headers=Headers({**dict(good.headers), "authorization": authorization})
        )
        with pytest.raises(AuthFailure) as info:
            asyncio.run(app.authenticator.authenticate(changed))
        assert info.value.code == "invalid_signature"


segment = st.text(st.characters(blacklist_categories=("Cs",)), min_size=0, max_size=8)
query_part = st.text(st.characters(blacklist_categories=("Cs",)), min_size=0, max_size=6)


@settings(max_examples=100, deadline=None)
@given(
    segments=st.lists(segment, min_size=1, max_size=4),
    params=st.lists(st.tuples(query_part, query_part), max_size=4),
    body=st.binary(max_size=64),
)
@example(segments=[""], params=[("", " "), ("a b", "c+d/\u00e9~")], body=b"")  # '+' for space on the wire
def test_botocore_signatures_verify_for_arbitrary_paths_and_queries(
    segments: list[str], params: list[tuple[str, str]], body: bytes
) -> None:
    # As botocore's serializers do: the URL path arrives percent-encoded, the query as params.
    path = "/" + "/".join(quote(s, safe="") for s in segments)
    request = AWSRequest(method="POST", url="http://fn.local" + path, data=body, params=params)
    BotoSigV4(Credentials(KEY_ID, SECRET), "lambda", "us-east-1").add_auth(request)
    prepared = request.prepare()
    sent_query = prepared.url.partition("?")[2]
    headers = Headers({k.lower(): v for k, v in prepared.headers.items()} | {"host": "fn.local"})
    captured = AuthRequest("POST", path, sent_query, headers, body)
    auth = SigV4Auth({KEY_ID: SECRET}, "lambda", "us-east-1")
    assert asyncio.run(auth.authenticate(captured)).id == KEY_ID


def send_presigned(
    server: Served, url_path: str, expires: int = 60, token: str | None = None
) -> tuple[int, Any]:
    request = AWSRequest(method="GET", url=server.url + url_path)
    BotoSigV4Query(Credentials(KEY_ID, SECRET, token), "lambda", "us-east-1", expires=expires).add_auth(
        request
    )
    target = request.url[len(server.url) :]
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        conn.request("GET", target)
        response = conn.getresponse()
        return response.status, json.loads(response.read() or b"{}")
    finally:
        conn.close()


def test_presigned_urls_from_botocore(
    served: tuple[PolicyApp, Served], monkeypatch: pytest.MonkeyPatch
) -> None:
    app, server = served
    status, payload = send_presigned(server, "/fn/a%20b?x=1&y=%2F", token="tok")
    assert status == 200, payload
    assert payload["claims"]["session_token"] is True
    query = app.requests[-1].query_string
    for tampered in (query.replace("x=1", "x=2"), query.replace("X-Amz-Expires=60", "X-Amz-Expires=600")):
        with pytest.raises(AuthFailure) as info:
            asyncio.run(
                app.authenticator.authenticate(dataclasses.replace(app.requests[-1], query_string=tampered))
            )
        assert info.value.code == "invalid_signature"
    # valid for its X-Amz-Expires, not for the 5-minute skew: signed 2 minutes ago for 60 s
    monkeypatch.setattr(
        "botocore.auth.get_current_datetime",
        lambda: datetime.now(UTC).replace(tzinfo=None) - timedelta(minutes=2),
    )
    status, payload = send_presigned(server, "/fn", expires=60)
    assert status == 403 and payload["error"]["code"] == "signature_expired"
    status, payload = send_presigned(server, "/fn", expires=3600)
    assert status == 200, payload
