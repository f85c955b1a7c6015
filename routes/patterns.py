"""Host patterns, path patterns and rewrite/redirect templates.

Patterns are validated when they are built (at config load), so a request never meets a pattern
that could misbehave. Paths are compared in their percent-encoded form, split on "/": an encoded
slash (`%2F`) is data inside one segment, never a separator, so `/files/{name}` matches
`/files/a%2Fb` with `name = "a%2Fb"`. Both sides are brought to one canonical spelling first
(RFC 3986 section 6.2.2: hex digits upper-cased, escapes of unreserved characters decoded, characters
that are not allowed in a segment encoded), and dot segments are resolved before matching so that
`/static/../admin` cannot reach a route through `/static/{*rest}`. Captured values stay in that
encoded form; `Template.render` keeps valid escapes and encodes everything else, so an encoded slash
in a captured tail is still encoded after a rewrite.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Literal

_UNRESERVED = "A-Za-z0-9\\-._~"
_PCHAR = _UNRESERVED + "!$&'()*+,;=:@"
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# A path made only of these characters is already canonical (no escapes, nothing to encode).
_CANONICAL_PATH = re.compile(f"[{_PCHAR}/]*")
_TO_FIX = re.compile(f"%[0-9A-Fa-f]{{2}}|[^{_PCHAR}]")
_TO_FIX_KEEP_SLASH = re.compile(f"%[0-9A-Fa-f]{{2}}|[^{_PCHAR}/]")
_UNRESERVED_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?")


def _fix(match: re.Match[str]) -> str:
    text = match.group()
    if len(text) == 3 and text[0] == "%":
        char = chr(int(text[1:], 16))
        return char if char in _UNRESERVED_CHARS else text.upper()
    return "".join(f"%{b:02X}" for b in text.encode("utf-8", "surrogatepass"))


def canonical_segment(segment: str) -> str:
    """The RFC 3986 normal form of one path segment (a "/" in it is encoded as `%2F`)."""
    return _TO_FIX.sub(_fix, segment)


def encode_value(value: str, keep_slashes: bool = False) -> str:
    """Percent-encode a value for a path: valid escapes are kept, anything not allowed is encoded."""
    if value in (".", ".."):
        return value.replace(".", "%2E")
    return (_TO_FIX_KEEP_SLASH if keep_slashes else _TO_FIX).sub(_fix, value)


def split_path(path: str) -> list[str] | None:
    """The canonical segments of a request path, or None if it is not an origin-form path.

    `/` is `[""]`; a trailing slash is a last empty segment, so `/a` and `/a/` differ.
    """
    if not path.startswith("/"):
        return None
    segments = path[1:].split("/")
    if not _CANONICAL_PATH.fullmatch(path):
        segments = [canonical_segment(s) for s in segments]  # may turn %2E into "."
        return _remove_dot_segments(segments)
    if "." in path:
        return _remove_dot_segments(segments)
    return segments


def _remove_dot_segments(segments: list[str]) -> list[str]:
    if "." not in segments and ".." not in segments:
        return segments
    out: list[str] = []
    last = len(segments) - 1
    for i, segment in enumerate(segments):
        if segment == "..":
            if out:
                out.pop()
        elif segment != ".":
            out.append(segment)
            continue
        if i == last:
            out.append("")
    return out or [""]


def normalize_host(host: str) -> str:
    """Lower-case, without port or trailing dot: the form host patterns are compared with."""
    host = host.strip().lower()
    if host.startswith("["):
        end = host.find("]")
        return host[: end + 1] if end > 0 else host
    colon = host.find(":")
    if colon >= 0:
        host = host[:colon]
    return host.rstrip(".")


HostKind = Literal["exact", "suffix", "any"]


@dataclass(frozen=True, slots=True)
class HostPattern:
    """`api.example.com` (exact), `*.example.com` (one or more labels before the suffix) or `*`."""

    text: str
    kind: HostKind
    value: str  # the host for "exact", the suffix without "*." for "suffix", "" for "any"

    @classmethod
    def parse(cls, text: str) -> HostPattern:
        if not isinstance(text, str):
            raise ValueError(f"a host pattern must be a string, not {type(text).__name__}")
        if text == "*":
            return cls(text, "any", "")
        lowered = text.lower()
        if lowered.startswith("*."):
            return cls(text, "suffix", _valid_hostname(lowered[2:], text))
        if "*" in lowered:
            raise ValueError(f"{text!r}: '*' is allowed only as the whole pattern or as a leading '*.'")
        return cls(text, "exact", _valid_hostname(lowered, text))

    def matches(self, host: str) -> bool:
        host = normalize_host(host)
        if self.kind == "any":
            return True
        if self.kind == "exact":
            return host == self.value
        return host.endswith("." + self.value)

    @property
    def rank(self) -> tuple[int, int]:
        """Smaller is more specific: exact, then suffixes by length (longest first), then `*`."""
        if self.kind == "exact":
            return (0, 0)
        if self.kind == "suffix":
            return (1, -self.value.count(".") - 1)
        return (2, 0)


def _valid_hostname(host: str, text: str) -> str:
    if host.startswith("[") and host.endswith("]"):
        try:
            return f"[{ipaddress.IPv6Address(host[1:-1]).compressed}]"
        except ValueError as exc:
            raise ValueError(f"{text!r}: not an IPv6 address: {exc}") from None
    if ":" in host:
        raise ValueError(f"{text!r}: a host pattern has no port (ports are ignored when matching)")
    host = host.rstrip(".")
    if not host or len(host) > 253:
        raise ValueError(f"{text!r}: a host name has 1 to 253 characters")
    for label in host.split("."):
        if not _LABEL.fullmatch(label):
            raise ValueError(
                f"{text!r}: label {label!r} is not a valid host name label "
                "(letters, digits, '-' and '_', 1 to 63 characters, no leading or trailing '-')"
            )
    return host


SegmentKind = Literal[0, 1, 2]
LITERAL: Final[SegmentKind] = 0
PARAM: Final[SegmentKind] = 1
TAIL: Final[SegmentKind] = 2


@dataclass(frozen=True, slots=True)
class PathPattern:
    """`/users/{id}/files/{*rest}`: literal segments, `{name}` for one segment, `{*name}` for the rest.

    A `{name}` matches one non-empty segment. A `{*name}` tail matches zero or more segments, so
    `/api/{*rest}` matches `/api`, `/api/` and `/api/a/b` (`rest` is "", "" and "a/b").
    """

    text: str
    segments: tuple[tuple[SegmentKind, str], ...]  # (kind, literal text or param name)
    params: tuple[tuple[int, str], ...]  # (segment index, name) of each {name}
    tail: str | None

    @classmethod
    def parse(cls, text: str) -> PathPattern:
        if not isinstance(text, str):
            raise ValueError(f"a path pattern must be a string, not {type(text).__name__}")
        if not text.startswith("/"):
            raise ValueError(f"{text!r}: a path pattern starts with '/'")
        if "?" in text or "#" in text:
            raise ValueError(f"{text!r}: a path pattern has no query or fragment")
        raw = text[1:].split("/")
        segments: list[tuple[SegmentKind, str]] = []
        params: list[tuple[int, str]] = []
        tail: str | None = None
        seen: set[str] = set()
        for i, seg in enumerate(raw):
            last = i == len(raw) - 1
            if seg.startswith("{") and seg.endswith("}") and len(seg) >= 2:
                is_tail = seg.startswith("{*")
                name = seg[2:-1] if is_tail else seg[1:-1]
                if not _NAME.fullmatch(name):
                    raise ValueError(
                        f"{text!r}: parameter {seg!r}: a name is a letter or '_' then letters, digits, '_'"
                    )
                if name in seen:
                    raise ValueError(f"{text!r}: parameter {name!r} appears twice")
                seen.add(name)
                if is_tail:
                    if not last:
                        raise ValueError(f"{text!r}: a tail {seg!r} must be the last segment")
                    tail = name
                    segments.append((TAIL, name))
                else:
                    params.append((i, name))
                    segments.append((PARAM, name))
                continue
            if "{" in seg or "}" in seg:
                raise ValueError(
                    f"{text!r}: segment {seg!r}: a parameter must be a whole segment, like {{id}}"
                )
            if seg == "" and not last:
                raise ValueError(f"{text!r}: empty segment ('//')")
            if seg in (".", ".."):
                raise ValueError(f"{text!r}: dot segments ('.', '..') are resolved before matching")
            bad = re.search(r"%(?![0-9A-Fa-f]{2})|[\x00-\x20\x7f\"<>\\^`|]", seg)
            if bad:
                raise ValueError(
                    f"{text!r}: segment {seg!r}: character {bad.group()!r} must be percent-encoded"
                )
            canonical = canonical_segment(seg)
            if canonical in (".", ".."):
                raise ValueError(f"{text!r}: dot segments ('.', '..') are resolved before matching")
            segments.append((LITERAL, canonical))
        return cls(text, tuple(segments), tuple(params), tail)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(name for _, name in self.params) + ((self.tail,) if self.tail else ())

    def extract(self, segments: Sequence[str]) -> dict[str, str]:
        """The params of a request whose canonical segments this pattern is known to match."""
        values = {name: segments[i] for i, name in self.params}
        if self.tail is not None:
            values[self.tail] = "/".join(segments[len(self.segments) - 1 :])
        return values

    def match(self, path: str) -> dict[str, str] | None:
        """Stand-alone matching (the route table uses a trie instead)."""
        segments = split_path(path)
        if segments is None:
            return None
        fixed = self.segments[:-1] if self.tail is not None else self.segments
        if len(segments) < len(fixed) or (self.tail is None and len(segments) != len(fixed)):
            return None
        for (kind, value), seg in zip(fixed, segments, strict=False):
            if (kind == LITERAL and seg != value) or (kind == PARAM and seg == ""):
                return None
        return self.extract(segments)


_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")


@dataclass(frozen=True, slots=True)
class Template:
    """`rewrite.path` or `redirect.to` with `{name}` placeholders for a route's path params.

    One-segment values are percent-encoded as a path segment (a "/" becomes `%2F`); the value of
    the `tail` param keeps its slashes. Valid escapes in values are kept as they are.
    """

    text: str
    parts: tuple[str, ...]  # literal, name, literal, name, ..., literal
    tail: str | None = None

    @classmethod
    def parse(cls, text: str, tail: str | None = None) -> Template:
        if not isinstance(text, str):
            raise ValueError(f"a template must be a string, not {type(text).__name__}")
        parts: list[str] = []
        pos = 0
        for m in _PLACEHOLDER.finditer(text):
            literal = text[pos : m.start()]
            if "{" in literal or "}" in literal:
                raise ValueError(f"{text!r}: unbalanced '{{' or '}}'")
            name = m.group(1)
            if not _NAME.fullmatch(name):
                raise ValueError(f"{text!r}: placeholder {m.group()!r}: write {{name}} with an identifier")
            parts += [literal, name]
            pos = m.end()
        rest = text[pos:]
        if "{" in rest or "}" in rest:
            raise ValueError(f"{text!r}: unbalanced '{{' or '}}'")
        parts.append(rest)
        return cls(text, tuple(parts), tail)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(self.parts[1::2]))

    def render(self, params: Mapping[str, str]) -> str:
        """Fill the placeholders; raises KeyError for a name that `params` lacks."""
        out = [self.parts[0]]
        for i in range(1, len(self.parts), 2):
            name = self.parts[i]
            out.append(encode_value(params[name], keep_slashes=name == self.tail))
            out.append(self.parts[i + 1])
        return "".join(out)
