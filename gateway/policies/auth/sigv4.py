"""`sigv4`: AWS Signature Version 4, as Lambda's `AWS_IAM` auth type checks it.

The gateway rebuilds the canonical request from what it received and compares signatures in
constant time. Clients disagree on two parts of the canonical request, so more than one form is
tried (each is a function of the request as received, so none lets a signature cover a different
request):

- canonical URI: the AWS rule for every service but S3 (dot segments and empty segments removed,
  then the already percent-encoded path encoded once more, as botocore does); or the raw path as
  received (curl 7.x, which signs the path exactly as it sends it).
- canonical query: pairs decoded and re-encoded with the AWS unreserved set, sorted (the rule);
  the raw pairs sorted (botocore signing a URL that carries its own query); or the raw query
  unsorted (curl 7.x).

Failures follow Lambda: every SigV4 failure, a missing `Authorization` included, is 403. A
signature covers `x-amz-content-sha256` when the client sent it; the gateway does not read the
body to check it against that value (that would buffer every upload), so the principal carries
`payload_sha256` and `checked_body` lets a caller verify while it streams.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import AsyncIterator, Callable, Mapping
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from functools import lru_cache
from typing import Final
from urllib.parse import quote, unquote, unquote_plus

from gateway.policies.auth.base import (
    AuthFailure,
    AuthRequest,
    AuthSetupError,
    Principal,
    header,
    header_values,
    require_env,
)

ALGORITHM: Final = "AWS4-HMAC-SHA256"
UNSIGNED_PAYLOAD: Final = "UNSIGNED-PAYLOAD"
EMPTY_SHA256: Final = hashlib.sha256(b"").hexdigest()
MAX_SKEW: Final = timedelta(minutes=5)
_HEX64 = re.compile(r"[0-9a-f]{64}")
_AMZ_DATE = re.compile(r"\d{8}T\d{6}Z")
MAX_PRESIGN_EXPIRES_S: Final = 604800  # seven days, as AWS
_PRESIGN_PARAMS = (
    "X-Amz-Algorithm",
    "X-Amz-Credential",
    "X-Amz-Date",
    "X-Amz-Expires",
    "X-Amz-SignedHeaders",
)


def _forbidden(code: str, message: str) -> AuthFailure:
    return AuthFailure(403, message, code=code)


def parse_credentials(raw: str) -> dict[str, str]:
    """`AKID:SECRET` pairs separated by commas, spaces or newlines."""
    pairs: dict[str, str] = {}
    for item in re.split(r"[,\s]+", raw.strip()):
        if not item:
            continue
        key_id, sep, secret = item.partition(":")
        if not sep or not key_id or not secret:
            raise ValueError("each entry must be ACCESS_KEY_ID:SECRET")
        pairs[key_id] = secret
    if not pairs:
        raise ValueError("no credentials")
    return pairs


@lru_cache(maxsize=256)
def signing_key(secret: str, date: str, region: str, service: str) -> bytes:
    key = ("AWS4" + secret).encode()
    for part in (date, region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


def _remove_dot_segments(path: str) -> str:
    if not path:
        return "/"
    out: list[str] = []
    for segment in path.split("/"):
        if segment in ("", "."):
            continue
        if segment == "..":
            if out:
                out.pop()
        else:
            out.append(segment)
    leading = "/" if path.startswith("/") else ""
    trailing = "/" if path.endswith("/") and out else ""
    return leading + "/".join(out) + trailing


def canonical_uris(raw_path: str) -> list[str]:
    raw = raw_path or "/"
    return _unique([quote(_remove_dot_segments(raw), safe="/~"), raw])


def canonical_queries(raw_query: str) -> list[str]:
    pairs = [p.partition("=") for p in raw_query.split("&") if p]

    def normalized(decode: Callable[[str], str]) -> str:
        encoded = sorted((quote(decode(k), safe="-_.~"), quote(decode(v), safe="-_.~")) for k, _, v in pairs)
        return "&".join(f"{k}={v}" for k, v in encoded)

    return _unique(
        [
            normalized(unquote),
            # botocore sends params form-encoded (space as '+') but signs them as %20; AWS reads '+'
            # in a query as a space, so this form is accepted as well.
            normalized(unquote_plus),
            "&".join(f"{k}={v}" for k, v in sorted((k, v) for k, _, v in pairs)),
            raw_query,
        ]
    )


def _unique(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))


def _parse_authorization(value: str) -> tuple[str, list[str], str]:
    algorithm, _, rest = value.strip().partition(" ")
    if algorithm != ALGORITHM:
        raise _forbidden("incomplete_signature", f"Unsupported authorization algorithm {algorithm!r}")
    fields: dict[str, str] = {}
    for part in rest.split(","):
        name, sep, field_value = part.strip().partition("=")
        if sep:
            fields[name.strip()] = field_value.strip()
    missing = [n for n in ("Credential", "SignedHeaders", "Signature") if not fields.get(n)]
    if missing:
        raise _forbidden(
            "incomplete_signature",
            f"Authorization header requires {', '.join(missing)} parameter(s)",
        )
    signed = fields["SignedHeaders"].split(";")
    if any(h != h.lower() or not h for h in signed) or signed != sorted(signed):
        raise _forbidden("incomplete_signature", "SignedHeaders must be lower-case, sorted and non-empty")
    return fields["Credential"], signed, fields["Signature"].lower()


def _request_time(headers: Mapping[str, str]) -> tuple[datetime, str]:
    amz = header(headers, "x-amz-date")
    if amz is not None:
        if not _AMZ_DATE.fullmatch(amz.strip()):
            raise _forbidden("incomplete_signature", "X-Amz-Date must be YYYYMMDD'T'HHMMSS'Z'")
        try:
            when = datetime.strptime(amz.strip(), "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
        except ValueError as exc:
            raise _forbidden("incomplete_signature", "X-Amz-Date is not a valid time") from exc
        return when, "x-amz-date"
    date = header(headers, "date")
    if date is None:
        raise _forbidden("incomplete_signature", "Request must carry X-Amz-Date or Date")
    try:
        when = parsedate_to_datetime(date)
    except (TypeError, ValueError) as exc:
        raise _forbidden("incomplete_signature", "Date header is not an HTTP date") from exc
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.astimezone(UTC), "date"


def _parse_presigned(raw_query: str) -> tuple[str, list[str], str, datetime, timedelta, str]:
    """The signature carried in the query (a presigned URL); the rest of the query is what was signed."""
    pairs = [p.partition("=") for p in raw_query.split("&") if p]
    params = {unquote(k): unquote(v) for k, _, v in pairs}
    missing = [n for n in _PRESIGN_PARAMS if not params.get(n)]
    if missing:
        raise _forbidden("incomplete_signature", f"Presigned URL lacks {', '.join(missing)}")
    if params["X-Amz-Algorithm"] != ALGORITHM:
        raise _forbidden("incomplete_signature", f"Unsupported X-Amz-Algorithm {params['X-Amz-Algorithm']!r}")
    try:
        expires = int(params["X-Amz-Expires"])
        when = datetime.strptime(params["X-Amz-Date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    except ValueError as exc:
        raise _forbidden("incomplete_signature", "X-Amz-Date or X-Amz-Expires is not valid") from exc
    if not 1 <= expires <= MAX_PRESIGN_EXPIRES_S:
        raise _forbidden("incomplete_signature", f"X-Amz-Expires must be 1..{MAX_PRESIGN_EXPIRES_S}")
    signed = params["X-Amz-SignedHeaders"].split(";")
    if any(h != h.lower() or not h for h in signed) or signed != sorted(signed):
        raise _forbidden(
            "incomplete_signature", "X-Amz-SignedHeaders must be lower-case, sorted and non-empty"
        )
    signed_query = "&".join(
        p for p in raw_query.split("&") if p and unquote(p.partition("=")[0]) != "X-Amz-Signature"
    )
    return (
        params["X-Amz-Credential"],
        signed,
        params["X-Amz-Signature"].lower(),
        when,
        timedelta(seconds=expires),
        signed_query,
    )


class SigV4Auth:
    needs_body = True

    def __init__(
        self, credentials: Mapping[str, str], service: str, region: str | None, max_skew: timedelta = MAX_SKEW
    ) -> None:
        self._credentials = dict(credentials)
        self.service = service
        self.region = region
        self.max_skew = max_skew

    @classmethod
    def from_config(
        cls, credentials_env: str | None, service: str, region: str | None, env: Mapping[str, str]
    ) -> SigV4Auth:
        raw = require_env(env, "credentials_env", credentials_env)
        try:
            credentials = parse_credentials(raw)
        except ValueError as exc:
            raise AuthSetupError("credentials_env", f"environment variable {credentials_env}: {exc}") from exc
        if not service:
            raise AuthSetupError("service", "must not be empty")
        return cls(credentials, service, region)

    async def authenticate(self, request: AuthRequest, now: datetime | None = None) -> Principal:
        headers = request.headers
        authorization = header(headers, "authorization")
        if authorization:
            credential, signed_headers, signature = _parse_authorization(authorization)
            when, date_header = _request_time(headers)
            required: tuple[str, ...] = ("host", date_header)
            query = request.query_string
            valid_until = when + self.max_skew
        elif "X-Amz-Signature=" in request.query_string:
            credential, signed_headers, signature, when, expires, query = _parse_presigned(
                request.query_string
            )
            required = ("host",)
            valid_until = when + expires
        else:
            raise _forbidden("missing_authentication_token", "Missing Authentication Token")

        key_id, scope_date, region, service = self._check_scope(credential)
        secret = self._credentials[key_id]
        if any(name not in signed_headers for name in required):
            raise _forbidden("incomplete_signature", f"SignedHeaders must include {' and '.join(required)}")
        amz_date = when.strftime("%Y%m%dT%H%M%SZ")
        if scope_date != amz_date[:8]:
            raise _forbidden("invalid_signature", "Credential date does not match the request date")
        current = now or datetime.now(UTC)
        if current > valid_until:
            raise _forbidden(
                "signature_expired",
                f"Signature expired: {amz_date} is now earlier than "
                f"{(current - (valid_until - when)).strftime('%Y%m%dT%H%M%SZ')}",
            )
        if when > current + self.max_skew:
            raise _forbidden(
                "signature_not_yet_current",
                f"Signature not yet current: {amz_date} is still later than "
                f"{(current + self.max_skew).strftime('%Y%m%dT%H%M%SZ')} (now + 5 min.)",
            )

        canonical_headers = []
        for name in signed_headers:
            values = header_values(headers, name)
            if not values:
                raise _forbidden("incomplete_signature", f"Signed header {name} is missing from the request")
            canonical_headers.append(f"{name}:{','.join(' '.join(v.split()) for v in values)}\n")

        payload_hash = self._payload_hash(request)
        scope = f"{scope_date}/{region}/{service}/aws4_request"
        key = signing_key(secret, scope_date, region, service)
        presented = signature.encode("latin-1", "replace")  # compare_digest refuses non-ASCII str
        matched = False
        for uri in canonical_uris(request.path):
            for canonical_query in canonical_queries(query):
                canonical = "\n".join(
                    [
                        request.method.upper(),
                        uri,
                        canonical_query,
                        "".join(canonical_headers),
                        ";".join(signed_headers),
                        payload_hash,
                    ]
                )
                to_sign = "\n".join(
                    [ALGORITHM, amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()]
                )
                expected = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest().encode()
                matched |= hmac.compare_digest(expected, presented)
        if not matched:
            raise _forbidden(
                "invalid_signature",
                "The request signature we calculated does not match the signature you provided. "
                "Check your AWS Secret Access Key and signing method.",
            )
        return Principal(
            kind="sigv4",
            id=key_id,
            claims={
                "access_key_id": key_id,
                "region": region,
                "service": service,
                "signed_headers": tuple(signed_headers),
                "payload_sha256": payload_hash,
                "session_token": header(headers, "x-amz-security-token") is not None
                or "X-Amz-Security-Token=" in query,
            },
        )

    def _check_scope(self, credential: str) -> tuple[str, str, str, str]:
        parts = credential.split("/")
        if len(parts) != 5 or parts[4] != "aws4_request":
            raise _forbidden(
                "incomplete_signature", "Credential must be ACCESS_KEY_ID/DATE/REGION/SERVICE/aws4_request"
            )
        key_id, scope_date, region, service, _ = parts
        if key_id not in self._credentials:
            raise _forbidden("unrecognized_client", "The security token included in the request is invalid.")
        if service != self.service:
            raise _forbidden(
                "invalid_signature", f"Credential should be scoped to correct service: '{self.service}'."
            )
        if self.region is not None and region != self.region:
            raise _forbidden(
                "invalid_signature", f"Credential should be scoped to a valid region: '{self.region}'."
            )
        return key_id, scope_date, region, service

    @staticmethod
    def _payload_hash(request: AuthRequest) -> str:
        declared = header(request.headers, "x-amz-content-sha256")
        if declared is not None:
            declared = declared.strip()
            if declared != UNSIGNED_PAYLOAD and not _HEX64.fullmatch(declared):
                raise _forbidden(
                    "incomplete_signature", "x-amz-content-sha256 must be a hex SHA-256 or UNSIGNED-PAYLOAD"
                )
            return declared
        return hashlib.sha256(request.body).hexdigest() if request.body else EMPTY_SHA256


async def checked_body(body: AsyncIterator[bytes], payload_sha256: str) -> AsyncIterator[bytes]:
    """Pass a body through, failing before its last chunk if it does not hash to what was signed.

    One chunk is held back so that the consumer never sees a complete body that did not verify.
    """
    digest = hashlib.sha256()
    pending: bytes | None = None
    async for chunk in body:
        digest.update(chunk)
        if pending is not None:
            yield pending
        pending = chunk
    if payload_sha256 != UNSIGNED_PAYLOAD and not hmac.compare_digest(digest.hexdigest(), payload_sha256):
        raise _forbidden("invalid_payload", "The request body does not match x-amz-content-sha256")
    if pending is not None:
        yield pending
