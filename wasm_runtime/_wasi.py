"""The rest of the wasi:http/proxy world: io, clocks, random, cli; filesystem and sockets as an
empty sandbox. `IMPLS` maps an interface (without version) to its functions by WIT name; methods
not listed are dispatched to the host object's Python method of the same name (see _linker).
"""

from __future__ import annotations

import os
import random as _random
import time
from collections.abc import Callable
from typing import Any

from . import _body_adapter
from ._canon import Err, HostResource, Ok
from ._context import GuestExit, guest_trap, inv
from ._http import (
    Fields,
    IncomingBody,
    OutgoingBody,
    OutgoingRequest,
    OutgoingResponse,
    RequestOptions,
    ResponseOutparam,
    http_error_code,
    outgoing_handle,
)
from ._streams import InputStream, LineSink, OutputStream, empty_source, poll, timer
from .ids import RID

STDIO_ROOM = 1 << 20
# A guest's bytes of randomness at once. Each byte of a list<u8> result crosses wasmtime 49's C API
# as a 32-byte value: 64 MiB (`wasmtime serve`'s limit) took a worker past 5 GB and rising; 1 MiB
# costs ~33 MB for the moment it crosses. Web Crypto's getRandomValues gives 64 KiB a call.
RANDOM_MAX_BYTES = 1 << 20
_WRITTEN = Ok(None)  # read by the crossing, never changed: one for every write


class TerminalOutput(HostResource):
    resource_id = RID.TERMINAL_OUTPUT


class Network(HostResource):
    resource_id = RID.NETWORK


def _stdout() -> OutputStream:
    return StdioStream("stdout")


def _stderr() -> OutputStream:
    return StdioStream("stderr")


class StdioSink:
    """stdout/stderr of whichever invocation is running: wasi-libc keeps the stream handle for
    the instance's life, and a reused instance serves several invocations with it."""

    closed = False
    consumer_gone = False

    def __init__(self, name: str) -> None:
        self.name = name

    def _sink(self) -> LineSink:
        i = inv()
        sinks: dict[str, LineSink] = i.__dict__.setdefault("_stdio", {})
        sink = sinks.get(self.name)
        if sink is None:
            sink = sinks[self.name] = LineSink(i, self.name)
            i.cleanups.append(sink.close)
        return sink

    def room(self) -> int:
        return STDIO_ROOM

    def push(self, data: bytes) -> None:
        self._sink().push(data)

    def close(self, error: BaseException | None = None) -> None:
        return None


class StdioStream(OutputStream):
    """stdout or stderr. Its bytes become log lines as they are written (a partial line waits in
    the invocation's LineSink), and a log takes whatever it is given: there is nothing to hold
    back, to flush or to wait for, so none of OutputStream's bookkeeping runs. A componentize-py
    guest makes three host calls a `print` (check-write, write, blocking-flush) twice over."""

    def __init__(self, name: str) -> None:
        super().__init__(StdioSink(name))

    def check_write(self) -> Ok:
        return Ok(min(STDIO_ROOM, inv().io_max))

    def write(self, data: bytes) -> Ok:
        self.sink.push(data)
        return _WRITTEN

    def flush(self) -> Ok:
        return _WRITTEN

    def blocking_flush(self) -> Ok:
        return _WRITTEN

    def blocking_write_and_flush(self, data: bytes) -> Ok:
        return self.write(data)


def _exit(status: Ok | Err) -> None:
    raise GuestExit(isinstance(status, Ok))


def _exit_with_code(code: int) -> None:
    raise GuestExit(code == 0)


def _wall_now() -> dict[str, int]:
    ns = time.time_ns()
    return {"seconds": ns // 1_000_000_000, "nanoseconds": ns % 1_000_000_000}


def _bounded_random(source: Callable[[int], bytes], where: str) -> Callable[[int], bytes]:
    def get(n: int) -> bytes:
        if n > RANDOM_MAX_BYTES:
            raise guest_trap(f"{where}: {n} bytes asked for at once; at most {RANDOM_MAX_BYTES} are given")
        return source(n)

    return get


_insecure = _random.Random()
_seed = (_random.getrandbits(64), _random.getrandbits(64))

Impl = Callable[..., Any]

IMPLS: dict[str, dict[str, Impl]] = {
    "wasi:io/poll": {"poll": poll},
    "wasi:io/error": {"[method]error.to-debug-string": lambda e: e.message},
    "wasi:clocks/monotonic-clock": {
        "now": time.monotonic_ns,
        "resolution": lambda: 1,
        "subscribe-instant": timer,
        "subscribe-duration": lambda d: timer(time.monotonic_ns() + d),
    },
    "wasi:clocks/wall-clock": {
        "now": _wall_now,
        "resolution": lambda: {"seconds": 0, "nanoseconds": 1000},
    },
    "wasi:random/random": {
        "get-random-bytes": _bounded_random(os.urandom, "wasi:random/random.get-random-bytes"),
        "get-random-u64": lambda: int.from_bytes(os.urandom(8), "little"),
    },
    "wasi:random/insecure": {
        "get-insecure-random-bytes": _bounded_random(
            _insecure.randbytes, "wasi:random/insecure.get-insecure-random-bytes"
        ),
        "get-insecure-random-u64": lambda: _insecure.getrandbits(64),
    },
    "wasi:random/insecure-seed": {"insecure-seed": lambda: _seed},
    "wasi:cli/environment": {
        "get-environment": lambda: list(inv().env),
        "get-arguments": lambda: [],
        "initial-cwd": lambda: None,
    },
    "wasi:cli/exit": {"exit": _exit, "exit-with-code": _exit_with_code},
    "wasi:cli/stdin": {"get-stdin": lambda: InputStream(empty_source(inv()))},
    "wasi:cli/stdout": {"get-stdout": _stdout},
    "wasi:cli/stderr": {"get-stderr": _stderr},
    "wasi:cli/terminal-stdin": {"get-terminal-stdin": lambda: None},
    "wasi:cli/terminal-stdout": {"get-terminal-stdout": lambda: None},
    "wasi:cli/terminal-stderr": {"get-terminal-stderr": lambda: None},
    "wasi:filesystem/preopens": {"get-directories": lambda: []},
    "wasi:filesystem/types": {"filesystem-error-code": lambda err: None},
    "wasi:sockets/instance-network": {"instance-network": Network},
    "wasi:sockets/tcp-create-socket": {"create-tcp-socket": lambda family: Err("access-denied")},
    "wasi:sockets/udp-create-socket": {"create-udp-socket": lambda family: Err("access-denied")},
    "wasi:sockets/ip-name-lookup": {"resolve-addresses": lambda net, name: Err("access-denied")},
    "wasi:http/types": {
        "[constructor]fields": Fields,
        "[static]fields.from-list": Fields.from_list,
        "[constructor]outgoing-request": OutgoingRequest,
        "[constructor]outgoing-response": OutgoingResponse,
        "[constructor]request-options": RequestOptions,
        "[static]response-outparam.set": ResponseOutparam.set,
        "[static]incoming-body.finish": IncomingBody.finish,
        "[static]outgoing-body.finish": OutgoingBody.finish,
        "http-error-code": http_error_code,
    },
    "wasi:http/outgoing-handler": {"handle": outgoing_handle},
    _body_adapter.INTERFACE: _body_adapter.HOST,
}


# Interfaces whose `string`s are bytes to the host (each code point one byte): the body adapter's.
LATIN1_STRINGS = frozenset({_body_adapter.INTERFACE})


def method_name(func_name: str) -> str | None:
    """`[method]res.some-name` -> "some_name": the crossing calls that method of the host object
    (its first argument) itself."""
    if not func_name.startswith("[method]"):
        return None
    return func_name.split(".", 1)[1].replace("-", "_")
