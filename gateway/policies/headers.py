"""Header rewriting for requests and responses (`request_headers`, `response_headers`).

Order is remove, then set, then append, so a rule that removes and sets the same name leaves the
set value, and `append` adds to whatever `set` left. Names are matched case-insensitively; the
rewrite is compiled once per route.
"""

from __future__ import annotations

from routes.config import HeaderRewrite

RawHeaders = list[tuple[bytes, bytes]]

# RFC 9110 7.6.1 plus the ones every proxy drops; `te: trailers` is re-added by nobody here.
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)


def strip_hop_by_hop(headers: RawHeaders) -> RawHeaders:
    """Drop hop-by-hop headers, including any the `connection` header names."""
    named = set(HOP_BY_HOP)
    for name, value in headers:
        if name == b"connection":
            named.update(t.strip().lower().encode() for t in value.decode("latin-1").split(",") if t.strip())
    return [(k, v) for k, v in headers if k not in named]


class HeaderRewriter:
    def __init__(self, rule: HeaderRewrite) -> None:
        self._set = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in rule.set]
        self._append = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in rule.append]
        self._drop = frozenset(k.lower().encode("latin-1") for k in rule.remove) | {k for k, _ in self._set}
        self.empty = not (self._set or self._append or self._drop)

    def apply(self, headers: RawHeaders) -> RawHeaders:
        if self.empty:
            return headers
        out = [(k, v) for k, v in headers if k not in self._drop]
        out.extend(self._set)
        out.extend(self._append)
        return out
