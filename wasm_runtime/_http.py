"""wasi:http/types and wasi:http/outgoing-handler on the host.

Method names follow the WIT (`[method]fields.get` -> `Fields.get`); the linker calls them with
canonical values (see _canon). Validation and immutability follow the spec: field names are
tokens, values carry no CR/LF/NUL, hop-by-hop headers are `forbidden`, and headers of incoming
messages (and of a response once it is set) are `immutable`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import re
from typing import Any, cast

from wasmtime.component import Variant

from ._canon import Err, HostResource, Ok
from ._context import HostHeld, Invocation, current, guest_trap, inv
from ._streams import ChunkSink, ChunkSource, InputStream, IoError, OutputStream, Pollable, always_ready
from .api import OutboundRequest, OutboundResponse, OutboundTimeouts
from .errors import FunctionFailed, OutboundDenied, OutboundError
from .ids import RID

TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
BAD_VALUE = re.compile(rb"[\x00\r\n]")
FORBIDDEN = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "transfer-encoding",
        "upgrade",
        "te",
        "host",
        "http2-settings",
    }
)
METHODS = ("get", "head", "post", "put", "delete", "connect", "options", "trace", "patch")
INVALID_SYNTAX = Variant("invalid-syntax")
FORBIDDEN_ERR = Variant("forbidden")
IMMUTABLE = Variant("immutable")
# What a guest may put in one `fields`: names and values, and ENTRY_BYTES more an entry (as HTTP/2
# counts a header table). Unbounded, a guest appending to one `fields` in a loop had the host keep
# ~25 MB more a second until its timeout (wasmtime's GHSA-852m-cvvp-9p4w; `wasmtime serve` traps
# at its own `max-http-fields-size`). Twice the gateway's default bound on a request's whole head
# (and on an origin's response head), so what a guest received fits in one it makes to pass it on.
FIELDS_MAX_BYTES = 128 * 1024
ENTRY_BYTES = 32


def method_variant(method: str) -> Variant:
    m = method.lower()
    if method.isupper() and m in METHODS:
        return Variant(m)
    return Variant("other", method)


def method_str(v: Variant) -> str:
    return cast(str, v.payload) if v.tag == "other" else v.tag.upper()  # `other` carries a string


def scheme_variant(scheme: str | None) -> Variant | None:
    if scheme is None:
        return None
    s = scheme.lower()
    if s == "http":
        return Variant("HTTP")
    if s == "https":
        return Variant("HTTPS")
    return Variant("other", scheme)


def scheme_str(v: Variant | None) -> str | None:
    if v is None:
        return None
    return v.payload if v.tag == "other" else v.tag.lower()


def _size(entries: list[tuple[str, bytes]]) -> int:
    return sum(len(name) + len(value) for name, value in entries) + ENTRY_BYTES * len(entries)


def _fits(size: int) -> None:
    if size > FIELDS_MAX_BYTES:
        raise guest_trap(
            f"wasi:http/types.fields: {size} bytes of names and values ({ENTRY_BYTES} more an entry) "
            f"are more than the sandbox keeps for one fields ({FIELDS_MAX_BYTES})"
        )


class Fields(HostResource):
    """Headers or trailers. A guest's own (mutable) ones are bounded one by one (FIELDS_MAX_BYTES)
    and together, while they live, by the instance's HostHeld; those the host makes from a message
    it received are bounded by how that message was taken in."""

    resource_id = RID.FIELDS
    _held: HostHeld | None = None  # what this one's bytes are charged to, while it lives

    def __init__(self, entries: list[tuple[str, bytes]] | None = None, *, immutable: bool = False) -> None:
        self.entries_ = entries if entries is not None else []
        self.immutable = immutable
        self.size = 0
        if not immutable:
            i = current.inv
            if i is not None:
                self._held = i.held
            self._resize(_size(self.entries_) if entries else 0)

    def _resize(self, size: int) -> None:
        """Takes `size` as this one's, if the bounds allow (else the guest traps)."""
        _fits(size)
        if self._held is not None and size != self.size:
            if size > self.size:
                self._held.charge(size - self.size)
            else:
                self._held.refund(self.size - size)
        self.size = size

    def __del__(self) -> None:
        if self._held is not None and self.size:
            self._held.refund(self.size)

    @staticmethod
    def _check(name: str, value: bytes | None = None) -> Variant | None:
        if not TOKEN.match(name):
            return INVALID_SYNTAX
        if value is not None and BAD_VALUE.search(value):
            return INVALID_SYNTAX
        if name.lower() in FORBIDDEN:
            return FORBIDDEN_ERR
        return None

    @classmethod
    def from_list(cls, entries: list[tuple[str, bytes]]) -> Ok | Err:
        out = []
        for name, value in entries:
            bad = cls._check(name, value)
            if bad is not None:
                return Err(bad)
            out.append((name.lower(), value))
        return Ok(cls(out))

    def get(self, name: str) -> list[bytes]:
        n = name.lower()
        return [v for k, v in self.entries_ if k == n]

    def has(self, name: str) -> bool:
        n = name.lower()
        return any(k == n for k, _ in self.entries_)

    def set(self, name: str, values: list[bytes]) -> Ok | Err:
        if self.immutable:
            return Err(IMMUTABLE)
        for v in values or [b""]:
            bad = self._check(name, v)
            if bad is not None:
                return Err(bad)
        n = name.lower()
        entries = [(k, v) for k, v in self.entries_ if k != n] + [(n, v) for v in values]
        self._resize(_size(entries))
        self.entries_ = entries
        return Ok(None)

    def delete(self, name: str) -> Ok | Err:
        if self.immutable:
            return Err(IMMUTABLE)
        bad = self._check(name)
        if bad is not None:
            return Err(bad)
        n = name.lower()
        self.entries_ = [(k, v) for k, v in self.entries_ if k != n]
        self._resize(_size(self.entries_))
        return Ok(None)

    def append(self, name: str, value: bytes) -> Ok | Err:
        if self.immutable:
            return Err(IMMUTABLE)
        bad = self._check(name, value)
        if bad is not None:
            return Err(bad)
        self._resize(self.size + len(name) + len(value) + ENTRY_BYTES)
        self.entries_.append((name.lower(), value))
        return Ok(None)

    def entries(self) -> list[tuple[str, bytes]]:
        return list(self.entries_)

    def clone(self) -> Fields:
        return Fields(list(self.entries_))


class IncomingBody(HostResource):
    resource_id = RID.INCOMING_BODY

    def __init__(self, source: ChunkSource, on_read: Any = None) -> None:
        self.source = source
        self._on_read = on_read
        self._stream_taken = False

    def stream(self) -> Ok | Err:
        if self._stream_taken:
            return Err(None)
        self._stream_taken = True
        return Ok(InputStream(self.source, self._on_read))

    @staticmethod
    def finish(this: IncomingBody) -> FutureTrailers:
        this.source.close()
        return FutureTrailers()


class FutureTrailers(HostResource):
    resource_id = RID.FUTURE_TRAILERS

    def __init__(self) -> None:
        self._taken = False

    def subscribe(self) -> Pollable:
        return always_ready()

    def get(self) -> Any:
        if self._taken:
            return Err(None)
        self._taken = True
        return Ok(Ok(None))


class IncomingRequest(HostResource):
    resource_id = RID.INCOMING_REQUEST

    def __init__(self, invocation: Invocation) -> None:
        r = invocation.request
        self._inv = invocation
        self._method = method_variant(r.method)
        self._scheme = scheme_variant(r.scheme)
        self._authority = r.authority
        self._path = r.path_with_query
        self._headers = [(k.lower(), bytes(v)) for k, v in r.headers]
        self._consumed = False

    def method(self) -> Variant:
        return self._method

    def path_with_query(self) -> str | None:
        return self._path

    def scheme(self) -> Variant | None:
        return self._scheme

    def authority(self) -> str | None:
        return self._authority

    def headers(self) -> Fields:
        return Fields(self._headers, immutable=True)

    def consume(self) -> Ok | Err:
        if self._consumed:
            return Err(None)
        self._consumed = True
        i = self._inv
        if i.ended:  # a request kept from an earlier invocation of a reused instance: its body is gone
            return Err(None)
        source = ChunkSource(i, i.request.body)
        i.cleanups.append(source.close)

        def mark_read() -> None:
            i.body_read_started = True

        return Ok(IncomingBody(source, mark_read))


class OutgoingBody(HostResource):
    resource_id = RID.OUTGOING_BODY

    def __init__(self, sink: ChunkSink) -> None:
        self.sink = sink
        self._stream: OutputStream | None = None
        self.finished = False

    def write(self) -> Ok | Err:
        if self._stream is not None:
            return Err(None)
        self._stream = OutputStream(self.sink)
        return Ok(self._stream)

    @staticmethod
    def finish(this: OutgoingBody, trailers: Fields | None) -> Ok | Err:
        if this._stream is not None:
            this._stream.finish()
        this.finished = True
        this.sink.close()
        return Ok(None)

    def on_drop(self) -> None:
        if not self.finished:
            self.finished = True
            self.sink.close(FunctionFailed("the function dropped its response body without finishing it"))


class OutgoingResponse(HostResource):
    resource_id = RID.OUTGOING_RESPONSE

    def __init__(self, headers: Fields) -> None:
        self._headers = headers
        self._status = 200
        self.sink = ChunkSink(inv())
        self.body_: OutgoingBody | None = None

    def status_code(self) -> int:
        return self._status

    def set_status_code(self, status: int) -> Ok | Err:
        # A response's final status: a 1xx here went out as the answer (a 101 without an upgrade,
        # which a proxy in front may take for a tunnel; a 103 that left the client waiting).
        if not 200 <= status <= 599:
            return Err(None)
        self._status = status
        return Ok(None)

    def headers(self) -> Fields:
        return self._headers

    def body(self) -> Ok | Err:
        if self.body_ is not None:
            return Err(None)
        self.body_ = OutgoingBody(self.sink)
        return Ok(self.body_)


class ResponseOutparam(HostResource):
    resource_id = RID.RESPONSE_OUTPARAM

    def __init__(self, on_set: Any) -> None:
        self._on_set = on_set

    @staticmethod
    def set(param: ResponseOutparam, response: Ok | Err) -> None:
        param._on_set(response)

    def send_informational(self, status: int, headers: Fields) -> Err:
        return Err(Variant("HTTP-protocol-error"))


class RequestOptions(HostResource):
    resource_id = RID.REQUEST_OPTIONS

    def __init__(self) -> None:
        self.connect: int | None = None
        self.first_byte: int | None = None
        self.between: int | None = None

    def connect_timeout(self) -> int | None:
        return self.connect

    def set_connect_timeout(self, d: int | None) -> Ok:
        self.connect = d
        return Ok(None)

    def first_byte_timeout(self) -> int | None:
        return self.first_byte

    def set_first_byte_timeout(self, d: int | None) -> Ok:
        self.first_byte = d
        return Ok(None)

    def between_bytes_timeout(self) -> int | None:
        return self.between

    def set_between_bytes_timeout(self, d: int | None) -> Ok:
        self.between = d
        return Ok(None)

    def timeouts(self) -> OutboundTimeouts:
        def s(ns: int | None) -> float | None:
            return None if ns is None else ns / 1e9

        return OutboundTimeouts(s(self.connect), s(self.first_byte), s(self.between))


AUTHORITY = re.compile(r"^[A-Za-z0-9\-._~!$&'()*+,;=:\[\]%]*$")


class OutgoingRequest(HostResource):
    resource_id = RID.OUTGOING_REQUEST

    def __init__(self, headers: Fields) -> None:
        self._headers = headers
        self._method: Variant = Variant("get")
        self._path: str | None = None
        self._scheme: Variant | None = None
        self._authority: str | None = None
        self.body_: OutgoingBody | None = None

    def body(self) -> Ok | Err:
        if self.body_ is not None:
            return Err(None)
        self.body_ = OutgoingBody(ChunkSink(inv()))
        return Ok(self.body_)

    def method(self) -> Variant:
        return self._method

    def set_method(self, m: Variant) -> Ok | Err:
        if m.tag == "other" and not TOKEN.match(m.payload or ""):
            return Err(None)
        self._method = m
        return Ok(None)

    def path_with_query(self) -> str | None:
        return self._path

    def set_path_with_query(self, p: str | None) -> Ok | Err:
        if p is not None and (any(c in p for c in " \r\n\x00") or (p and not p.startswith(("/", "?", "*")))):
            return Err(None)
        self._path = p
        return Ok(None)

    def scheme(self) -> Variant | None:
        return self._scheme

    def set_scheme(self, s: Variant | None) -> Ok | Err:
        if (
            s is not None
            and s.tag == "other"
            and not re.match(r"^[A-Za-z][A-Za-z0-9+.\-]*$", s.payload or "")
        ):
            return Err(None)
        self._scheme = s
        return Ok(None)

    def authority(self) -> str | None:
        return self._authority

    def set_authority(self, a: str | None) -> Ok | Err:
        if a is not None and (not AUTHORITY.match(a) or "@" in a):
            return Err(None)
        self._authority = a
        return Ok(None)

    def headers(self) -> Fields:
        return self._headers


class IncomingResponse(HostResource):
    resource_id = RID.INCOMING_RESPONSE

    def __init__(self, invocation: Invocation, response: OutboundResponse) -> None:
        self._inv = invocation
        self._response = response
        self._consumed = False

    def status(self) -> int:
        return self._response.status

    def headers(self) -> Fields:
        return Fields([(k.lower(), bytes(v)) for k, v in self._response.headers], immutable=True)

    def consume(self) -> Ok | Err:
        if self._consumed:
            return Err(None)
        self._consumed = True
        source = ChunkSource(self._inv, self._response.body)
        self._inv.cleanups.append(source.close)
        return Ok(IncomingBody(source))


def error_code(exc: BaseException) -> Variant:
    if isinstance(exc, OutboundDenied):
        return Variant("HTTP-request-denied")
    if isinstance(exc, OutboundError):
        return Variant(exc.kind, exc.payload)
    return Variant("internal-error", f"{type(exc).__name__}: {exc}"[:500])


class FutureIncomingResponse(HostResource):
    resource_id = RID.FUTURE_INCOMING_RESPONSE

    def __init__(self, invocation: Invocation, future: concurrent.futures.Future[OutboundResponse]) -> None:
        self._inv = invocation
        self._future = future
        self._taken = False

    def subscribe(self) -> Pollable:
        return Pollable(self._future.done)

    def get(self) -> Any:
        if not self._future.done():
            return None
        if self._taken:
            return Err(None)
        self._taken = True
        try:
            response = self._future.result()
        except concurrent.futures.CancelledError:
            return Ok(Err(Variant("internal-error", "cancelled")))
        except Exception as exc:  # transport failures reach the guest as the spec's error-code
            return Ok(Err(error_code(exc)))
        return Ok(Ok(IncomingResponse(self._inv, response)))


def outgoing_handle(request: OutgoingRequest, options: RequestOptions | None) -> Ok | Err:
    i = inv()
    i.need_thread("an outbound request")  # before resolving its name, which may block
    authority = request._authority
    if not authority:
        return Err(Variant("HTTP-request-URI-invalid"))
    scheme = scheme_str(request._scheme) or "https"
    try:
        origin = i.outbound.check_and_resolve(scheme, authority)
    except OutboundDenied as exc:
        i.emit_log("runtime", f"outbound request to {scheme}://{authority} denied: {exc}")
        return Err(Variant("HTTP-request-denied"))
    request._headers.immutable = True
    body = None
    if request.body_ is not None:
        body = request.body_.sink.chunks()
    out = OutboundRequest(
        method=method_str(request._method),
        url=f"{scheme}://{authority}{request._path or '/'}",
        headers=list(request._headers.entries_),
        body=body,
        origin=origin,
    )
    timeouts = options.timeouts() if options is not None else OutboundTimeouts()
    coro = _send(i, out, timeouts)
    try:
        future = asyncio.run_coroutine_threadsafe(coro, i.loop)
    except RuntimeError:  # the event loop is gone
        coro.close()
        return Err(Variant("internal-error", "the gateway is shutting down"))
    future.add_done_callback(i.wake_threadsafe)
    i.cleanups.append(lambda: future.cancel())
    return Ok(FutureIncomingResponse(i, future))


async def _send(i: Invocation, request: OutboundRequest, timeouts: OutboundTimeouts) -> OutboundResponse:
    response = await i.transport.send(request, timeouts)
    body = response.body
    aclose = getattr(body, "aclose", None)
    if aclose is not None:
        loop = i.loop

        def close_body() -> None:
            i.post(lambda: loop.create_task(aclose()))

        i.cleanups.append(close_body)
    return response


def http_error_code(err: IoError) -> Variant | None:
    return err.http_code
