"""CORS for routes and Function URLs, with Lambda Function URL semantics.

- Origins match exactly, except that scheme and host compare case-insensitively (an origin is
  `scheme://host[:port]`, so the whole string is compared lower-cased) and a configured trailing
  `/` is ignored. `*` allows every origin.
- A preflight (OPTIONS with `origin` and `access-control-request-method`) is answered by the
  gateway with 200 and an empty body; the target never sees it. For an allowed origin it carries
  the configured methods, headers and max-age and lets the browser enforce them (so the browser's
  console names the method or header that is missing); for an origin that is not allowed it
  carries no `access-control-*` header at all.
- Actual responses for an allowed origin get `access-control-allow-origin`, `-allow-credentials`
  and `-expose-headers` (expose only here, never on a preflight). Nothing for other origins.
- `*` is never sent together with credentials: the request's origin (and, for `*` methods or
  headers, the requested ones) is echoed instead, which is what browsers require.
- Whenever the answer depends on the origin (`vary_origin`), `vary: origin` is part of what this
  module returns for allowed origins, and the gateway must add it to every other response of the
  route as well (merging with the target's own `Vary`), so a shared cache never hands one origin's
  answer to another.
"""

from __future__ import annotations

from collections.abc import Mapping

from routes.config import Cors

PREFLIGHT_STATUS = 200


def _normalize_origin(origin: str) -> str:
    return origin.strip().rstrip("/").lower()


def _get(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is None and not hasattr(headers, "getlist"):
        # A plain dict may carry any case; starlette's Headers is already case-insensitive.
        value = next((v for k, v in headers.items() if k.lower() == name), None)
    return value


class CorsPolicy:
    def __init__(self, cors: Cors) -> None:
        self.any_origin = "*" in cors.allow_origins
        self.origins = frozenset(_normalize_origin(o) for o in cors.allow_origins if o != "*")
        self.credentials = cors.allow_credentials
        self.any_method = "*" in cors.allow_methods
        self.methods = ", ".join(dict.fromkeys(m.strip().upper() for m in cors.allow_methods if m != "*"))
        self.any_header = "*" in cors.allow_headers
        self.allow_headers = ", ".join(
            dict.fromkeys(h.strip().lower() for h in cors.allow_headers if h != "*")
        )
        self.expose_headers = ", ".join(dict.fromkeys(h.strip().lower() for h in cors.expose_headers))
        self.max_age = None if cors.max_age is None else str(int(cors.max_age))
        # With `*` and no credentials every allowed answer is the same, whatever the origin.
        self.vary_origin = not (self.any_origin and not self.credentials)

    def allows_origin(self, origin: str | None) -> bool:
        if not origin:
            return False
        return self.any_origin or _normalize_origin(origin) in self.origins

    def is_preflight(self, method: str, headers: Mapping[str, str]) -> bool:
        return (
            method.upper() == "OPTIONS"
            and bool(_get(headers, "origin"))
            and bool(_get(headers, "access-control-request-method"))
        )

    def _allow_origin(self, origin: str) -> list[tuple[str, str]]:
        if self.any_origin and not self.credentials:
            return [("access-control-allow-origin", "*")]
        out = [("access-control-allow-origin", origin.strip())]
        if self.credentials:
            out.append(("access-control-allow-credentials", "true"))
        return out

    def preflight(self, headers: Mapping[str, str]) -> tuple[int, list[tuple[str, str]]]:
        origin = _get(headers, "origin")
        vary = ["origin"] if self.vary_origin else []
        out: list[tuple[str, str]] = []
        if origin and self.allows_origin(origin):
            out.extend(self._allow_origin(origin))
            requested_method = (_get(headers, "access-control-request-method") or "").strip().upper()
            if self.any_method:
                if self.credentials:
                    out.append(("access-control-allow-methods", requested_method))
                    vary.append("access-control-request-method")
                else:
                    out.append(("access-control-allow-methods", "*"))
            elif self.methods:
                out.append(("access-control-allow-methods", self.methods))
            requested_headers = (_get(headers, "access-control-request-headers") or "").strip().lower()
            if self.any_header:
                if not self.credentials:
                    out.append(("access-control-allow-headers", "*"))
                elif requested_headers:
                    out.append(("access-control-allow-headers", requested_headers))
                    vary.append("access-control-request-headers")
            elif self.allow_headers:
                out.append(("access-control-allow-headers", self.allow_headers))
            if self.max_age is not None:
                out.append(("access-control-max-age", self.max_age))
        if vary:
            out.append(("vary", ", ".join(vary)))
        return PREFLIGHT_STATUS, out

    def response_headers(self, headers: Mapping[str, str]) -> list[tuple[str, str]]:
        origin = _get(headers, "origin")
        if not origin or not self.allows_origin(origin):
            return []
        out = self._allow_origin(origin)
        if self.expose_headers:
            out.append(("access-control-expose-headers", self.expose_headers))
        if self.vary_origin:
            out.append(("vary", "origin"))
        return out
