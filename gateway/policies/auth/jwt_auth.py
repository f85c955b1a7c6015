"""`jwt`: bearer tokens checked with pyjwt, the algorithm pinned by config.

A token's `alg` header must be one the route lists (`none` can never be listed). HMAC algorithms
verify only with the secret from `secret_env`; RSA and EC algorithms verify only with a key from a
JWKS (file or URL) chosen by `kid`. Keeping the two key sources apart is what defeats algorithm
confusion (an HS256 token "signed" with an RSA public key finds no HMAC secret to be checked with).

JWKS URLs are fetched on first use and kept in a `cachetools.TTLCache`; a token with an unknown
`kid` triggers a refetch, at most once per `REFETCH_INTERVAL_S`, so a flood of made-up kids cannot
turn the gateway into a load generator against the identity provider. If a refetch fails, the
last keys that were fetched keep serving.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
import jwt
from cachetools import TTLCache

from gateway.policies.auth.base import (
    AuthFailure,
    AuthRequest,
    AuthSetupError,
    Principal,
    header,
    require_env,
)

log = logging.getLogger("edgefn.auth.jwt")

HMAC_ALGORITHMS = frozenset({"HS256", "HS384", "HS512"})
JWKS_ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512"})
JWKS_TTL_S = 300.0
REFETCH_INTERVAL_S = 30.0
FETCH_TIMEOUT_S = 5.0


def _challenge(description: str | None = None) -> str:
    if description is None:
        return "Bearer"
    safe = description.replace('"', "'").replace("\\", "/")
    return f'Bearer error="invalid_token", error_description="{safe}"'


def _invalid(description: str) -> AuthFailure:
    return AuthFailure(401, description, www_authenticate=_challenge(description))


def _index_jwks(document: Any, source: str) -> dict[str, dict[str, Any]]:
    """Keys by kid ('' for a key without one); keys not meant for signatures are left out."""
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ValueError(f"{source} is not a JWKS document (no 'keys' list)")
    keys: dict[str, dict[str, Any]] = {}
    for jwk in document["keys"]:
        if not isinstance(jwk, dict) or jwk.get("kty") not in ("RSA", "EC"):
            continue
        if jwk.get("use", "sig") != "sig":
            continue
        keys[str(jwk.get("kid", ""))] = jwk
    return keys


class JwksFile:
    def __init__(self, path: Path) -> None:
        try:
            self._keys = _index_jwks(json.loads(path.read_text()), str(path))
        except (OSError, ValueError) as exc:
            raise AuthSetupError("jwks_file", f"cannot read JWKS from {path}: {exc}") from exc
        if not self._keys:
            raise AuthSetupError("jwks_file", f"{path} holds no RSA or EC signing keys")

    async def get(self, kid: str) -> dict[str, Any] | None:
        return _select(self._keys, kid)


class JwksUrl:
    def __init__(
        self,
        url: str,
        http: httpx.AsyncClient | None,
        ttl_s: float = JWKS_TTL_S,
        refetch_interval_s: float = REFETCH_INTERVAL_S,
    ) -> None:
        self.url = url
        self._http = http
        self.refetch_interval_s = refetch_interval_s
        self._cache: TTLCache[str, dict[str, dict[str, Any]]] = TTLCache(maxsize=1, ttl=ttl_s)
        self._last_good: dict[str, dict[str, Any]] = {}
        self._last_fetch = float("-inf")
        self._lock = asyncio.Lock()
        self.fetches = 0

    async def get(self, kid: str) -> dict[str, Any] | None:
        keys = self._cache.get("keys")
        if keys is None:
            keys = await self._refresh(None) if self._may_refetch() else self._last_good
        elif _select(keys, kid) is None and self._may_refetch():
            keys = await self._refresh(keys)
        return _select(keys, kid)

    def _may_refetch(self) -> bool:
        # A fetch under way counts as allowed: waiting for it is how concurrent requests share it.
        return self._lock.locked() or time.monotonic() - self._last_fetch >= self.refetch_interval_s

    async def _refresh(self, seen: dict[str, dict[str, Any]] | None) -> dict[str, dict[str, Any]]:
        async with self._lock:
            current = self._cache.get("keys")
            if current is not None and current is not seen:
                return current  # another request refreshed while this one waited
            if time.monotonic() - self._last_fetch < self.refetch_interval_s:
                return current if current is not None else self._last_good
            self._last_fetch = time.monotonic()
            self.fetches += 1
            try:
                if self._http is None:
                    self._http = httpx.AsyncClient(timeout=FETCH_TIMEOUT_S)
                response = await self._http.get(self.url, timeout=FETCH_TIMEOUT_S)
                response.raise_for_status()
                keys = _index_jwks(response.json(), self.url)
            except (httpx.HTTPError, ValueError) as exc:
                log.warning("JWKS fetch from %s failed: %s", self.url, exc)
                return self._last_good
            self._cache["keys"] = keys
            self._last_good = keys
            return keys


def _select(keys: dict[str, dict[str, Any]], kid: str) -> dict[str, Any] | None:
    if kid:
        return keys.get(kid)
    # A token without `kid` is accepted only when there is no choice to make.
    return next(iter(keys.values())) if len(keys) == 1 else None


class JwtAuth:
    needs_body = False

    def __init__(
        self,
        algorithms: tuple[str, ...],
        secret: str | None,
        jwks: JwksFile | JwksUrl | None,
        issuer: str | None,
        audience: str | None,
        leeway_s: float,
    ) -> None:
        self.algorithms = algorithms
        self._secret = secret
        self._jwks = jwks
        self.issuer = issuer
        self.audience = audience
        self.leeway_s = leeway_s
        self._pyjwk_cache: dict[tuple[str, str], jwt.PyJWK] = {}

    @classmethod
    def from_config(
        cls,
        algorithms: tuple[str, ...],
        secret_env: str | None,
        jwks_file: Path | None,
        jwks_url: str | None,
        issuer: str | None,
        audience: str | None,
        leeway_s: float,
        env: Mapping[str, str],
        http: httpx.AsyncClient | None,
    ) -> JwtAuth:
        if not algorithms:
            raise AuthSetupError("algorithms", "list the accepted algorithms, e.g. [\"RS256\"]")
        unknown = [a for a in algorithms if a not in HMAC_ALGORITHMS | JWKS_ALGORITHMS]
        if unknown:
            raise AuthSetupError("algorithms", f"not supported: {', '.join(unknown)}")
        secret = None
        if any(a in HMAC_ALGORITHMS for a in algorithms):
            secret = require_env(env, "secret_env", secret_env)
        jwks: JwksFile | JwksUrl | None = None
        if any(a in JWKS_ALGORITHMS for a in algorithms):
            if jwks_file is not None:
                jwks = JwksFile(Path(jwks_file))
            elif jwks_url:
                jwks = JwksUrl(jwks_url, http)
            else:
                raise AuthSetupError("jwks_file", "RSA/EC algorithms need jwks_file or jwks_url")
        if leeway_s < 0:
            raise AuthSetupError("leeway_s", "must not be negative")
        return cls(tuple(algorithms), secret, jwks, issuer, audience, leeway_s)

    async def authenticate(self, request: AuthRequest) -> Principal:
        token = self._bearer(request)
        try:
            unverified = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise _invalid("malformed token") from exc
        alg = unverified.get("alg")
        if not isinstance(alg, str) or alg not in self.algorithms:
            raise _invalid(f"algorithm {alg!r} is not accepted")
        key = await self._key_for(alg, str(unverified.get("kid", "")))
        options: dict[str, Any] = {"require": ["exp"], "verify_aud": self.audience is not None}
        if self.issuer is not None:
            options["require"].append("iss")
        if self.audience is not None:
            options["require"].append("aud")
        try:
            claims = jwt.decode(
                token,
                key=key,
                algorithms=[alg],
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway_s,
                options=options,  # type: ignore[arg-type]
            )
        except jwt.ExpiredSignatureError as exc:
            raise _invalid("token has expired") from exc
        except jwt.ImmatureSignatureError as exc:
            raise _invalid("token is not valid yet") from exc
        except jwt.InvalidAudienceError as exc:
            raise _invalid("token audience is not accepted") from exc
        except jwt.InvalidIssuerError as exc:
            raise _invalid("token issuer is not accepted") from exc
        except jwt.MissingRequiredClaimError as exc:
            raise _invalid(f"token lacks the {exc.claim} claim") from exc
        except jwt.InvalidSignatureError as exc:
            raise _invalid("signature verification failed") from exc
        except jwt.PyJWTError as exc:
            raise _invalid(f"invalid token: {exc}") from exc
        subject = claims.get("sub")
        return Principal(kind="jwt", id=subject if isinstance(subject, str) else "", claims=claims)

    @staticmethod
    def _bearer(request: AuthRequest) -> str:
        value = header(request.headers, "authorization")
        if not value:
            raise AuthFailure(401, "missing bearer token", www_authenticate=_challenge())
        scheme, _, token = value.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AuthFailure(401, "authorization is not a bearer token", www_authenticate=_challenge())
        return token.strip()

    async def _key_for(self, alg: str, kid: str) -> str | jwt.PyJWK:
        if alg in HMAC_ALGORITHMS:
            if self._secret is None:  # pragma: no cover - from_config guarantees it
                raise _invalid("no secret for HMAC tokens")
            return self._secret
        if self._jwks is None:  # pragma: no cover - from_config guarantees it
            raise _invalid("no signing keys configured")
        jwk = await self._jwks.get(kid)
        if jwk is None:
            raise _invalid("no signing key matches the token's kid")
        if jwk.get("alg") not in (None, alg):
            raise _invalid("token algorithm does not match its key")
        cache_key = (json.dumps(jwk, sort_keys=True), alg)
        pyjwk = self._pyjwk_cache.get(cache_key)
        if pyjwk is None:
            try:
                pyjwk = jwt.PyJWK(jwk, algorithm=alg)
            except jwt.PyJWTError as exc:
                raise _invalid("token algorithm does not fit its key") from exc
            if len(self._pyjwk_cache) > 256:
                self._pyjwk_cache.clear()
            self._pyjwk_cache[cache_key] = pyjwk
        return pyjwk
