"""Checks of single config values (addresses, URLs, tokens, schedules).

Each returns an error message, or "" when the value is fine, so the loader can attach the message
to the key it read the value from.
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

from routes.patterns import HostPattern
from routes.reader import suggest

TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # RFC 9110 token: methods and header names
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
FUNCTION_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
ORIGIN_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9_.-]{0,62})")
ROUTE_NAME = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
REGION_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
_ALIAS = re.compile(r"[A-Za-z0-9_-]{1,128}")
_CRON_FIELD = re.compile(r"[0-9A-Za-z*?,/#\-]+")
_RATE = re.compile(r"rate\((\d+) (minute|minutes|hour|hours|day|days)\)")
JWT_ALGORITHMS = (
    "HS256", "HS384", "HS512", "RS256", "RS384", "RS512",
    "ES256", "ES384", "ES512", "PS256", "PS384", "PS512", "EdDSA",
)  # fmt: skip


def address(value: str) -> str:
    """`host:port` for a listener; port 0 lets the OS choose (handy for tests)."""
    host, sep, port = value.rpartition(":")
    if not sep or not host:
        return f"{value!r} is not host:port (for example '127.0.0.1:8080')"
    if host.startswith("[") and host.endswith("]"):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            return f"{value!r}: {host!r} is not an IPv6 address"
    else:
        try:
            HostPattern.parse(host)
        except ValueError:
            return f"{value!r}: {host!r} is not a host name or IPv4 address"
        if "*" in host:
            return f"{value!r}: a listen address has no wildcard; use 0.0.0.0"
    if not port.isdigit() or int(port) > 65535:
        return f"{value!r}: port {port!r} is not a number from 0 to 65535"
    return ""


def http_url(value: str) -> str:
    """An absolute http(s) URL with a host, no query and no fragment."""
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError as exc:
        return f"{value!r} is not a URL: {exc}"
    if parts.scheme not in ("http", "https"):
        return f"{value!r}: the scheme must be http or https"
    if not parts.hostname:
        return f"{value!r}: the URL has no host"
    if parts.query or parts.fragment:
        return f"{value!r}: the URL must have no query or fragment"
    return ""


def cidr(value: str) -> str:
    try:
        ipaddress.ip_network(value, strict=True)
    except ValueError as exc:
        return f"{value!r} is not a CIDR network ({exc})"
    return ""


def host_port(value: str) -> bool:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) <= 65535:
        return False
    try:
        HostPattern.parse(host.strip("[]"))
    except ValueError:
        try:
            ipaddress.IPv6Address(host.strip("[]"))
        except ValueError:
            return False
    return "*" not in host


def function_ref(value: str, functions: set[str]) -> str:
    """`NAME`, `NAME:ALIAS`, `NAME:3` or `NAME:$LATEST`; NAME must be a configured function."""
    return function_qualifier(value) or function_known(value.partition(":")[0], functions)


def function_qualifier(value: str) -> str:
    """The syntax of a function reference; whether its NAME exists is `function_known`'s question."""
    name, sep, qualifier = value.partition(":")
    if not FUNCTION_NAME.fullmatch(name):
        return f"{value!r}: {name!r} is not a function name (1-64 letters, digits, '-', '_')"
    if sep:
        if not qualifier:
            return f"{value!r}: empty qualifier after ':'; write NAME, NAME:ALIAS or NAME:VERSION"
        if qualifier.isdigit():
            if int(qualifier) < 1:
                return f"{value!r}: versions start at 1"
        elif qualifier != "$LATEST" and not _ALIAS.fullmatch(qualifier):
            return f"{value!r}: {qualifier!r} is not an alias (letters, digits, '-', '_') or a version"
    return ""


def function_known(name: str, functions: set[str], deployed: set[str] | None = None) -> str:
    """The one check of a referenced function's name: in the config (or, at serve, deployed)."""
    if name in functions or (deployed is not None and name in deployed):
        return ""
    known = ", ".join(sorted(functions)) or "none"
    if deployed is None:
        return f"function {name!r} is not configured (configured: {known}){suggest(name, functions)}"
    every = functions | deployed
    return (
        f"function {name!r} is neither configured nor deployed (configured: {known}; "
        f"deployed: {', '.join(sorted(deployed)) or 'none'}){suggest(name, every)}"
    )


def schedule(value: str) -> str:
    """EventBridge-style `cron(m h dom mon dow year)` with 6 fields, or `rate(N unit)`."""
    if value.startswith("cron(") and value.endswith(")"):
        fields = value[5:-1].split()
        if len(fields) != 6:
            return (
                f"{value!r}: cron() takes 6 fields (minutes hours day-of-month month day-of-week year), "
                f"got {len(fields)}"
            )
        bad = [f for f in fields if not _CRON_FIELD.fullmatch(f)]
        if bad:
            return f"{value!r}: cron field {bad[0]!r} has characters other than 0-9 A-Z * ? , / - #"
        return ""
    m = _RATE.fullmatch(value)
    if m:
        return "" if int(m.group(1)) >= 1 else f"{value!r}: the rate must be at least 1"
    if value.startswith("rate("):
        return f"{value!r}: write rate(N minutes|hours|days), for example 'rate(5 minutes)'"
    return f"{value!r}: a schedule is 'cron(m h dom mon dow year)' or 'rate(N unit)'"


def cors_origin(value: str) -> str:
    if value == "*":
        return ""
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError as exc:
        return f"{value!r} is not an origin: {exc}"
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.path or parts.query:
        return f"{value!r} is not an origin like 'https://app.example' (scheme://host[:port], no path)"
    return ""


def header_value(value: str) -> str:
    if any(c in value for c in "\r\n\x00"):
        return f"{value!r}: a header value must not contain CR, LF or NUL"
    return ""
