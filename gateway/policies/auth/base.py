"""The shapes every authenticator shares: the request it sees, what it answers, how it fails.

    AuthSetupError      raised at start-up: a config key points at something missing or unreadable
    AuthFailure         raised per request: 401 (with `www-authenticate`) or 403

The objects here are framework-free on purpose: the gateway hands in a `Mapping` of headers
(starlette's case-insensitive `Headers`), and turns `AuthFailure` into its JSON error itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol


class AuthSetupError(Exception):
    """A config key of `auth` cannot be honoured; `key` is relative to the `auth` table."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key
        self.message = message


class AuthFailure(Exception):
    status: int
    code: str
    message: str
    www_authenticate: str | None

    def __init__(
        self, status: int, message: str, *, code: str | None = None, www_authenticate: str | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code or ("unauthorized" if status == 401 else "forbidden")
        self.message = message
        self.www_authenticate = www_authenticate

    @property
    def headers(self) -> list[tuple[str, str]]:
        return [("www-authenticate", self.www_authenticate)] if self.www_authenticate else []


@dataclass(frozen=True)
class AuthRequest:
    method: str
    path: str  # raw path as received (percent-encoded), no query
    query_string: str  # raw, as received
    headers: Mapping[str, str]  # case-insensitive
    body: bytes | None = None  # only for sigv4 when no x-amz-content-sha256 header was sent


@dataclass(frozen=True)
class Principal:
    kind: str
    id: str
    claims: Mapping[str, Any] = field(default_factory=dict)


class Authenticator(Protocol):
    needs_body: bool

    async def authenticate(self, request: AuthRequest) -> Principal: ...


ANONYMOUS = Principal(kind="anonymous", id="")


class NoAuth:
    needs_body = False

    async def authenticate(self, request: AuthRequest) -> Principal:
        return ANONYMOUS


def header_values(headers: Mapping[str, str], name: str) -> list[str]:
    """Every value of a header, repeats kept: starlette's `Headers.getlist` when there is one."""
    getlist = getattr(headers, "getlist", None)
    if getlist is not None:
        return list(getlist(name))
    for key, value in headers.items():
        if key.lower() == name:
            return [value]
    return []


def header(headers: Mapping[str, str], name: str) -> str | None:
    values = header_values(headers, name)
    return values[0] if values else None


def require_env(env: Mapping[str, str], key: str, var: str | None) -> str:
    if not var:
        raise AuthSetupError(key, "required for this auth type")
    value = env.get(var)
    if value is None or not value.strip():
        raise AuthSetupError(key, f"environment variable {var} is not set or empty")
    return value
