"""Authentication per route: `none`, `api_key`, `jwt`, `sigv4` (see docs/auth.md).

`build_authenticator` runs once at start-up and fails there (`AuthSetupError`, naming the key
under `auth`) rather than on the first request. Each authenticator's `authenticate` either returns
a `Principal` or raises `AuthFailure`, which the gateway renders as its JSON error with
`www-authenticate` when there is one.

`jwt_auth` is imported by `build_authenticator` when a route asks for `jwt`: PyJWT brings the
`cryptography` package, about 50 ms of a node's start that a node without JWT routes never needs.
"""

from __future__ import annotations

from collections.abc import Mapping

import httpx

from gateway.policies.auth.api_key import ApiKeyAuth
from gateway.policies.auth.base import (
    ANONYMOUS,
    Authenticator,
    AuthFailure,
    AuthRequest,
    AuthSetupError,
    NoAuth,
    Principal,
)
from gateway.policies.auth.sigv4 import SigV4Auth, checked_body
from routes.config import Auth

__all__ = [
    "ANONYMOUS",
    "ApiKeyAuth",
    "AuthFailure",
    "AuthRequest",
    "AuthSetupError",
    "Authenticator",
    "NoAuth",
    "Principal",
    "SigV4Auth",
    "build_authenticator",
    "checked_body",
]


def build_authenticator(
    auth: Auth, env: Mapping[str, str], http: httpx.AsyncClient | None = None
) -> Authenticator:
    if auth.type == "none":
        return NoAuth()
    if auth.type == "api_key":
        return ApiKeyAuth.from_config(auth.header, auth.keys_env, env)
    if auth.type == "jwt":
        from gateway.policies.auth.jwt_auth import JwtAuth

        return JwtAuth.from_config(
            algorithms=tuple(auth.algorithms),
            secret_env=auth.secret_env,
            jwks_file=auth.jwks_file,
            jwks_url=auth.jwks_url,
            issuer=auth.issuer,
            audience=auth.audience,
            leeway_s=auth.leeway_s,
            env=env,
            http=http,
        )
    if auth.type == "sigv4":
        return SigV4Auth.from_config(auth.credentials_env, auth.service, auth.region, env)
    raise AuthSetupError("type", f"unknown auth type {auth.type!r}")
