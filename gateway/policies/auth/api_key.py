"""`api_key`: a shared secret in a request header, compared in constant time against every key.

Every configured key is compared, with no early exit, so the time taken does not say which key
(or how much of one) matched. The principal's id is a short fingerprint of the key, never the key.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping

from gateway.policies.auth.base import (
    AuthFailure,
    AuthRequest,
    AuthSetupError,
    Principal,
    header,
    require_env,
)


class ApiKeyAuth:
    needs_body = False

    def __init__(self, header_name: str, keys: list[str]) -> None:
        self.header = header_name.lower()
        self._keys = [k.encode() for k in keys]
        self._challenge = f'ApiKey header="{self.header}"'

    @classmethod
    def from_config(cls, header_name: str, keys_env: str | None, env: Mapping[str, str]) -> ApiKeyAuth:
        raw = require_env(env, "keys_env", keys_env)
        keys = [k.strip() for k in raw.split(",") if k.strip()]
        if not keys:
            raise AuthSetupError("keys_env", f"environment variable {keys_env} holds no keys")
        if not header_name.strip():
            raise AuthSetupError("header", "must name a header")
        return cls(header_name.strip(), keys)

    async def authenticate(self, request: AuthRequest) -> Principal:
        presented = header(request.headers, self.header)
        if not presented:
            raise AuthFailure(
                401, f"missing API key in header {self.header}", www_authenticate=self._challenge
            )
        # starlette decodes header bytes as latin-1; encoding back gives the bytes the client sent.
        candidate = presented.strip().encode("latin-1", "replace")
        matched = -1
        for index, key in enumerate(self._keys):
            if hmac.compare_digest(candidate, key):
                matched = index
        if matched < 0:
            raise AuthFailure(401, "invalid API key", www_authenticate=self._challenge)
        fingerprint = hashlib.sha256(self._keys[matched]).hexdigest()[:12]
        return Principal(kind="api_key", id=fingerprint, claims={"key_index": matched})
