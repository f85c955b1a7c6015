"""wasi:io on the host: pollables, input streams fed from async iterators, output streams with
backpressure into bounded queues that the event loop drains.

Direction loop -> guest (`ChunkSource`): at most one chunk is requested ahead from the async
iterator (`run_coroutine_threadsafe`), so a client body is read only as the guest asks for it.
Direction guest -> loop (`ChunkSink`): flushed writes become chunks in a queue bounded by bytes;
`check-write` reports the room left and the write pollable is not ready while it is full, so a
slow reader blocks the guest, not the gateway's memory.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from wasmtime.component import Variant

from ._canon import Err, HostResource, Ok
from ._context import HostHeld, Invocation, guest_trap, inv
from .api import LastChunk
from .ids import RID

SINK_CAPACITY = 1 << 20
HOLD_BYTES = 64 << 10  # flushed chunks smaller than this ride with the guest's other posts
LAST_TAG_MAX = 64 << 10  # a LastChunk is a copy: past this the write it saves is worth less
# One list<u8> crossing is capped by wasmtime 49's hostcall fuel (about 2.7 MB; beyond it the
# call traps and poisons the instance) and costs a value array of 32 bytes per byte: reads
# return, and check-write permits, at most this much (`Invocation.io_max`) unless the guest
# runs inside the byte adapter, whose crossings are strings (`_body_adapter.IO_MAX`).
MAX_IO = 64 << 10
AUTO_FLUSH = 64 << 10
LOG_LINE_MAX = 16 << 10

CLOSED = Variant("closed")


class IoError(HostResource):
    resource_id = RID.IO_ERROR

    def __init__(self, message: str, http_code: Variant | None = None) -> None:
        self.message = message
        self.http_code = http_code


def failed(message: str, http_code: Variant | None = None) -> Err:
    return Err(Variant("last-operation-failed", IoError(message, http_code)))


class Pollable(HostResource):
    resource_id = RID.POLLABLE

    def __init__(self, ready: Callable[[], bool], wake_at: float | None = None) -> None:
        self._ready = ready
        self.wake_at = wake_at

    def ready(self) -> bool:
        return self._ready()

    def block(self) -> None:
        inv().wait(self._ready, self.wake_at)


def always_ready() -> Pollable:
    return Pollable(lambda: True)


def timer(at_monotonic_ns: int) -> Pollable:
    at_s = at_monotonic_ns / 1e9
    return Pollable(lambda: time.monotonic_ns() >= at_monotonic_ns, wake_at=at_s)


def poll(pollables: list[Pollable]) -> list[int]:
    if not pollables:
        raise ValueError("poll with an empty list")
    found: list[int] = []
    wake_at = min((p.wake_at for p in pollables if p.wake_at is not None), default=None)

    def any_ready() -> bool:
        found.extend(i for i, p in enumerate(pollables) if p.ready())
        return bool(found)

    inv().wait(any_ready, wake_at)
    return found


async def _next_chunk(it: AsyncIterator[bytes]) -> bytes | None:
    """The next non-empty chunk, or None at the end. The end is a value, not StopAsyncIteration
    carried across the future: its traceback held this frame, and with it the body, in a reference
    cycle that only a collection frees."""
    async for chunk in it:
        if chunk:
            return bytes(chunk)
    return None


class ChunkSource:
    """Bytes from an async iterator on the loop, read from the worker thread."""

    def __init__(self, invocation: Invocation, it: AsyncIterator[bytes] | None) -> None:
        self._inv = invocation
        self._it = it
        self._buf = b""
        self._pos = 0
        self.eof = it is None
        self.error: BaseException | None = None
        self._pending: concurrent.futures.Future[bytes | None] | None = None
        self.started = False

    def _harvest(self) -> None:
        p = self._pending
        if p is None or not p.done():
            return
        self._pending = None
        try:
            chunk = p.result()
            if chunk is None:
                self.eof = True
            else:
                self._buf = chunk
                self._pos = 0
        except concurrent.futures.CancelledError:
            self.error = ConnectionError("body read was cancelled")
        except Exception as exc:  # the client or the origin failed mid-body: the guest sees it
            self.error = exc

    def _fetch(self) -> None:
        if self._pending is None and not self.eof and self.error is None and self._it is not None:
            self._inv.need_thread("reading the request body")
            self.started = True
            coro = _next_chunk(self._it)
            try:
                self._pending = asyncio.run_coroutine_threadsafe(coro, self._inv.loop)
            except RuntimeError as exc:  # the event loop is gone
                coro.close()
                self.error = exc
                return
            self._pending.add_done_callback(self._inv.wake_threadsafe)

    def ready(self) -> bool:
        self._harvest()
        if self._pos < len(self._buf) or self.eof or self.error is not None:
            return True
        self._fetch()
        return False

    def read(self, n: int) -> Ok | Err:
        self._harvest()
        if self._pos < len(self._buf):
            end = self._pos + min(n, self._inv.io_max)
            data = self._buf[self._pos : end] if self._pos or end < len(self._buf) else self._buf
            self._pos = min(end, len(self._buf))
            if self._pos >= len(self._buf):
                self._buf, self._pos = b"", 0
            return Ok(data)
        if self.error is not None:
            return failed(f"body read failed: {self.error}", getattr(self.error, "http_code", None))
        if self.eof:
            return Err(CLOSED)
        self._fetch()
        return Ok(b"")

    def blocking_read(self, n: int) -> Ok | Err:
        self._inv.wait(self.ready)
        return self.read(n)

    def close(self) -> None:
        """At the invocation's end: a guest may keep the stream (in a reused instance's table),
        but not the client's body behind it."""
        p = self._pending
        if p is not None and not p.done():
            p.cancel()
        self._it = None
        self._pending = None
        self.eof = True


class ChunkSink:
    """Flushed guest writes, queued for a consumer on the event loop."""

    _held: HostHeld | None = None

    def __init__(self, invocation: Invocation, capacity: int = SINK_CAPACITY) -> None:
        self._inv = invocation
        self.capacity = capacity
        self._chunks: collections.deque[bytes] = collections.deque()
        self._queued = 0
        # Queued bytes count against the instance's HostHeld: a guest filling the bodies of many
        # requests it never sends would otherwise have the host keep a capacity's worth of each.
        self._held = invocation.held
        self.closed = False
        self.error: BaseException | None = None
        self.consumer_gone = False
        self._event = asyncio.Event()

    # worker side
    def room(self) -> int:
        held = self._held
        if held is None:
            return max(0, self.capacity - self._queued)
        return max(0, min(self.capacity - self._queued, held.limit - held.held))

    def push(self, chunk: bytes) -> None:
        if self._held is not None:
            self._held.add(len(chunk))
        with self._inv.cond:
            self._chunks.append(chunk)
            self._queued += len(chunk)
        # A small chunk waits for company (see LoopPoster); a big one is worth its wake-up, and
        # the loop sends it while the guest makes the next
        self._inv.post(self._event.set, hold=len(chunk) < HOLD_BYTES)

    def close(self, error: BaseException | None = None) -> None:
        if self.closed:
            return
        self.error = error  # before `closed`: the loop reads them without the lock
        self.closed = True
        self._inv.post(self._event.set)

    # loop side
    async def chunks(self) -> AsyncIterator[bytes]:
        """Yields each flushed chunk; raises the error the sink was closed with. A small chunk
        after which the guest had already finished its body comes as a LastChunk."""
        try:
            while True:
                while not self._chunks:
                    if self.closed:
                        if self.error is not None:
                            raise self.error
                        return
                    self._event.clear()
                    if self._chunks or self.closed:
                        continue
                    await self._event.wait()
                with self._inv.cond:
                    chunk = self._chunks.popleft()
                    self._queued -= len(chunk)
                    if self._held is not None:
                        self._held.refund(len(chunk))  # before the wake: the guest may wait on room
                    last = (
                        self.closed and not self._chunks and self.error is None and len(chunk) <= LAST_TAG_MAX
                    )
                    self._inv.wake()
                yield LastChunk(chunk) if last else chunk
        finally:
            if not (self.closed and not self._chunks):
                self.consumer_gone = True
                self._inv.wake()

    def __del__(self) -> None:
        if self._held is not None and self._queued:
            self._held.refund(self._queued)  # never consumed: an outgoing request never sent


class LineSink:
    """stdout/stderr: split into lines, each one handed to the invocation's log function."""

    def __init__(self, invocation: Invocation, name: str) -> None:
        self._inv = invocation
        self.name = name
        self._buf = bytearray()
        self.closed = False
        self.consumer_gone = False

    def room(self) -> int:
        return 1 << 20

    def push(self, data: bytes) -> None:
        self._buf += data
        while True:
            nl = self._buf.find(b"\n")
            if nl < 0:
                if len(self._buf) > LOG_LINE_MAX:
                    self._emit(bytes(self._buf[:LOG_LINE_MAX]))
                    del self._buf[:LOG_LINE_MAX]
                    continue
                return
            self._emit(bytes(self._buf[:nl]))
            del self._buf[: nl + 1]

    def _emit(self, line: bytes) -> None:
        self._inv.emit_log(self.name, line.decode("utf-8", "replace").rstrip("\r"))

    def close(self, error: BaseException | None = None) -> None:
        if self._buf:
            self._emit(bytes(self._buf))
            self._buf.clear()
        self.closed = True


Sink = Any  # ChunkSink, LineSink or anything with room/push/close/closed/consumer_gone


class InputStream(HostResource):
    resource_id = RID.INPUT_STREAM

    def __init__(self, source: ChunkSource, on_read: Callable[[], None] | None = None) -> None:
        self.source = source
        self._on_read = on_read

    def read(self, n: int) -> Ok | Err:
        if self._on_read:
            self._on_read()
        return self.source.read(n)

    def blocking_read(self, n: int) -> Ok | Err:
        if self._on_read:
            self._on_read()
        return self.source.blocking_read(n)

    def skip(self, n: int) -> Ok | Err:
        r = self.read(n)
        return Ok(len(r.value)) if isinstance(r, Ok) else r

    def blocking_skip(self, n: int) -> Ok | Err:
        r = self.blocking_read(n)
        return Ok(len(r.value)) if isinstance(r, Ok) else r

    def subscribe(self) -> Pollable:
        return Pollable(self.source.ready)


class OutputStream(HostResource):
    resource_id = RID.OUTPUT_STREAM

    def __init__(self, sink: Sink) -> None:
        self.sink = sink
        self._pending = bytearray()

    def _gone(self) -> bool:
        return self.sink.consumer_gone or self.sink.closed

    def push_pending(self) -> None:
        if self._pending:
            self.sink.push(bytes(self._pending))
            self._pending.clear()
        inv().unflushed.discard(self)

    def _room(self) -> int:
        return max(0, self.sink.room() - len(self._pending))

    def check_write(self) -> Ok | Err:
        if self._gone():
            return Err(CLOSED)
        n = self._room()
        if n == 0 and self._pending:
            self.push_pending()
            n = self._room()
        return Ok(min(n, inv().io_max))

    def write(self, data: bytes) -> Ok | Err:
        if self._gone():
            return Err(CLOSED)
        if len(self._pending) + len(data) > self.sink.room():
            # More than check-write would permit now: queued, a guest ignoring it would have the
            # host keep all it writes. wasmtime's body streams trap the same way ("write exceeded
            # budget"), on the room there is, whether or not check-write was asked.
            raise guest_trap(
                f"wasi:io/streams.output-stream.write: {len(data)} bytes where check-write permits "
                f"{self._room()}"
            )
        self._pending += data
        if len(self._pending) >= AUTO_FLUSH:
            self.push_pending()
        elif self._pending:
            inv().unflushed.add(self)
        return Ok(None)

    def flush(self) -> Ok | Err:
        if self._gone():
            return Err(CLOSED)
        self.push_pending()
        return Ok(None)

    def _writable(self) -> bool:
        return self._gone() or self.sink.room() > 0

    def _wait_room(self) -> None:
        if self._writable():  # the usual case: no wait, so nothing to push first
            return
        inv().wait(self._writable)

    def blocking_flush(self) -> Ok | Err:
        r = self.flush()
        if isinstance(r, Ok):
            self._wait_room()
        return r

    def blocking_write_and_flush(self, data: bytes) -> Ok | Err:
        self._wait_room()
        r = self.write(data)
        return self.flush() if isinstance(r, Ok) else r

    def write_zeroes(self, n: int) -> Ok | Err:
        return self.write(bytes(n))

    def blocking_write_zeroes_and_flush(self, n: int) -> Ok | Err:
        return self.blocking_write_and_flush(bytes(n))

    def splice(self, src: InputStream, n: int) -> Ok | Err:
        room = self.check_write()
        if isinstance(room, Err):
            return room
        r = src.read(min(n, room.value or 0))
        if isinstance(r, Err):
            return r
        w = self.write(r.value)
        return Ok(len(r.value)) if isinstance(w, Ok) else w

    def blocking_splice(self, src: InputStream, n: int) -> Ok | Err:
        self._wait_room()
        r = src.blocking_read(min(n, max(1, self.sink.room())))
        if isinstance(r, Err):
            return r
        w = self.blocking_write_and_flush(r.value)
        return Ok(len(r.value)) if isinstance(w, Ok) else w

    def subscribe(self) -> Pollable:
        return Pollable(lambda: self._gone() or self._room() > 0)

    def finish(self) -> None:
        self.push_pending()


def empty_source(invocation: Invocation) -> ChunkSource:
    return ChunkSource(invocation, None)


def _unused(*_: Any) -> None:
    return None
