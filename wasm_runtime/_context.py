"""Per-invocation state that host functions reach through a thread-local.

Host callbacks run on the worker thread that called into the guest, and one Store is used by one
thread at a time, so "the current invocation" is simply a thread-local. Every blocking host wait
goes through `Invocation.wait`, which honours the deadline (epoch interruption only stops wasm
code, not a host call that is blocked) and cancellation (the client went away).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from wasmtime import WasmtimeError

from .api import GuestRequest

if TYPE_CHECKING:
    from ._gate import RunGate
    from .api import Limits, OutboundTransport
    from .outbound import OutboundPolicy

log = logging.getLogger("edgefn.function")

# What an ended invocation holds instead of its request (Invocation.release).
_ENDED = GuestRequest("GET", "http", "", "/", [], None)


class HostAbort(Exception):
    """Raised inside a host call to stop the guest; the runtime maps it to a FunctionError."""


class HostTimeout(HostAbort):
    pass


class HostCancelled(HostAbort):
    pass


class NeedsThread(HostAbort):
    """A guest running on the event loop's own thread (see `Invocation.inline`) came to what it
    cannot do there: wait for something, start outbound I/O, or run past its inline budget. Its run
    is dropped unseen and the request runs again on a guest thread."""


class GuestExit(HostAbort):
    def __init__(self, ok: bool) -> None:
        super().__init__("guest called wasi:cli/exit " + ("ok" if ok else "with an error"))
        self.ok = ok


# How long a guest's posts may wait for company before the loop is woken for them anyway.
HOLD_S = 0.002


class LoopPoster:
    """Runs calls from worker threads on one event loop, batched: the first call queued arms one
    `call_soon_threadsafe` (a write to the loop's self-pipe and a wake-up), and every call queued
    before the loop gets to it rides along.

    A running guest's calls are held rather than arming at once (`hold`): its head, body chunks,
    log lines and body's end go over in one wake-up when it waits for something or returns
    (`kick`), or once the first of them has waited HOLD_S. Woken for each, the loop thread took the
    GIL from the guest's thread between its host calls: a hello request cost ~20 context switches
    where ~8 remain."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._calls: collections.deque[tuple[Callable[..., Any], tuple[Any, ...]]] = collections.deque()
        self._lock = threading.Lock()
        self._armed = False
        self._held_since: float | None = None  # monotonic time of the oldest held call

    def post(self, fn: Callable[..., Any], args: tuple[Any, ...], hold: bool = False) -> None:
        """Raises RuntimeError if the loop is closed."""
        with self._lock:
            self._calls.append((fn, args))
            if not self._armed and self._held_since is None:
                self._held_since = time.monotonic()
            if not self._take_arming(late_only=hold):
                return
        self._arm()

    def kick(self, late_only: bool = False) -> None:
        """Sends the held calls now (with `late_only`, only if they have waited HOLD_S).
        Raises RuntimeError if the loop is closed."""
        with self._lock:
            if not self._take_arming(late_only):
                return
        self._arm()

    def _take_arming(self, late_only: bool) -> bool:
        """Under the lock: whether the caller is the one to arm the drain (it is then armed)."""
        held = self._held_since
        if self._armed or held is None or (late_only and time.monotonic() - held < HOLD_S):
            return False
        self._armed = True
        self._held_since = None
        return True

    def _arm(self) -> None:
        try:
            self.loop.call_soon_threadsafe(self._drain)
        except RuntimeError:
            with self._lock:
                self._armed = False
                self._held_since = None
                self._calls.clear()
            raise

    def _drain(self) -> None:
        with self._lock:
            calls, self._calls = self._calls, collections.deque()
            self._armed = False
        run_posted(calls)


def run_posted(calls: Iterable[tuple[Callable[..., Any], tuple[Any, ...]]]) -> None:
    """Runs a guest's posts on the event loop's thread, in order."""
    for fn, args in calls:
        try:
            fn(*args)
        except Exception:  # one failing callback must not drop the others queued with it
            log.exception("callback %r posted from a guest thread failed", fn)


_posters: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, LoopPoster] = weakref.WeakKeyDictionary()


def poster_for(loop: asyncio.AbstractEventLoop) -> LoopPoster:
    """The loop's poster (called on the loop's own thread, so no lock is needed to make one)."""
    poster = _posters.get(loop)
    if poster is None:
        poster = _posters[loop] = LoopPoster(loop)
    return poster


class Invocation:
    def __init__(
        self,
        *,
        loop: asyncio.AbstractEventLoop,
        request: GuestRequest,
        limits: Limits,
        env: Mapping[str, str],
        outbound: OutboundPolicy,
        transport: OutboundTransport,
        request_id: str,
        log_fn: Callable[[str, str], None] | None,
        io_max: int,
    ) -> None:
        self.loop = loop
        self.poster = poster_for(loop)
        self.request = request
        self.limits = limits
        self.env = list(env.items())
        self.outbound = outbound
        self.transport = transport
        self.request_id = request_id
        self.log_fn = log_fn
        self.io_max = io_max  # the most bytes one stream read returns or one check-write permits
        self.cond = threading.Condition()
        self.deadline = time.monotonic() + limits.timeout_s  # from arrival: a wait for a thread counts
        self.cancelled = False
        self.abort: HostAbort | None = None
        self.host_error: BaseException | None = None
        self.response_set = False
        self.body_read_started = False
        self.cleanups: list[Callable[[], object]] = []
        self._wakeups = 0
        # output streams holding written-but-unflushed bytes; pushed out before any wait, so a
        # guest that writes and then sleeps (without flush, as StarlingMonkey does) still streams
        self.unflushed: set[Any] = set()
        self.gate: RunGate | None = None  # set by the runtime: guests executing at once
        self.in_gate = False
        self.ended = False
        # Run on the event loop's thread (see runtime.Runtime._run_inline): posts are kept here
        # until the guest returns, and what it cannot do there raises NeedsThread.
        self.inline = False
        self.inline_until = 0.0  # the thread's CPU time (s) past which an inline run moves
        self.kept: list[tuple[Callable[..., Any], tuple[Any, ...]]] = []
        self.held: HostHeld | None = None  # the instance's, set by the runtime as it runs

    def release(self) -> None:
        """Let go of what the invocation carried once its guest is done. Its stdio sinks and
        cleanups point back at it: left in place, every request was a reference cycle, freed only by
        a collection. And a guest that never drops its request (componentize-py's do not unless
        told) leaves it in a reused instance's table, keeping this invocation reachable until the
        instance retires: without the request (headers, the client's body stream) and log
        function, what stays is a small shell."""
        self.ended = True
        self.cleanups.clear()
        self.__dict__.pop("_stdio", None)
        self.request = _ENDED
        self.log_fn = None

    def wake(self) -> None:
        with self.cond:
            self._wakeups += 1
            self.cond.notify_all()

    def wake_threadsafe(self, _: Any = None) -> None:
        self.wake()

    def cancel(self) -> None:
        self.cancelled = True
        self.wake()

    def check(self) -> None:
        if self.cancelled:
            raise self._abort(HostCancelled("the client went away"))
        if time.monotonic() >= self.deadline:
            raise self._abort(HostTimeout("the function's timeout expired in a host wait"))

    def _abort(self, exc: HostAbort) -> HostAbort:
        self.abort = exc
        return exc

    def wait(self, ready: Callable[[], bool], wake_at: float | None = None) -> None:
        """Blocks the worker thread until `ready()`; wake_at (monotonic s) bounds one sleep.
        A guest that has to block gives its place in the run gate to another while it waits; one
        running on the event loop's thread (`inline`) raises NeedsThread instead."""
        for stream in list(self.unflushed):
            stream.push_pending()
        if self.inline:
            if not ready():
                self.need_thread("a wait")
            return
        gate = self.gate
        if gate is None or not self.in_gate:
            self._wait(ready, wake_at)
            return
        if ready():
            return
        gate.leave(self)
        self._wait(ready, wake_at)  # if this raises, the guest unwinds without a place: it is ending
        gate.enter(self)

    def _wait(self, ready: Callable[[], bool], wake_at: float | None) -> None:
        with self.cond:
            while True:
                # a wake-up may happen inside ready() itself (a future that is already done
                # runs its callback at once, on this thread): count them so none is lost
                seen = self._wakeups
                if ready():
                    return
                self.check()
                if self._wakeups != seen:
                    continue
                now = time.monotonic()
                timeout = self.deadline - now
                if wake_at is not None:
                    timeout = min(timeout, wake_at - now)
                if timeout > 0:
                    self.send_held()  # what the guest posted may be what it waits on
                    self.cond.wait(timeout)

    def need_thread(self, what: str) -> None:
        """Raises NeedsThread if the guest runs inline: `what` (a wait, outbound I/O) would hold
        up the event loop, or need it."""
        if self.inline:
            raise self._abort(NeedsThread(f"{what} needs a guest thread"))

    def post(self, fn: Callable[..., Any], *args: Any, hold: bool = True) -> bool:
        """Runs fn on the event loop, soon (`hold`: see LoopPoster) or now; False (and the guest is
        cancelled) if the loop is gone."""
        if self.inline:
            self.kept.append((fn, args))
            return True
        try:
            self.poster.post(fn, args, hold)
        except RuntimeError:  # the loop closed under a running guest: nobody is listening
            self.cancelled = True
            return False
        return True

    def send_held(self, late_only: bool = False) -> None:
        """Wakes the loop for the posts held so far (see LoopPoster.kick)."""
        if self.inline:
            return
        try:
            self.poster.kick(late_only)
        except RuntimeError:
            self.cancelled = True

    def emit_log(self, stream: str, line: str) -> None:
        if self.log_fn is None or not self.post(self.log_fn, stream, line):
            log.info("%s [%s] %s", self.request_id, stream, line)


class _Current(threading.local):
    inv: Invocation | None = None


current = _Current()


class HostHeld:
    """Bytes one instance's guest has the host keep, live: in `fields` it made (charged as they
    grow, given back as they are freed) and in bodies it wrote that are not sent yet (a stream's
    room shrinks with what is left). One `fields` or one body is bounded by itself; this bounds
    them all, which the resource cap alone left at 100,000 times that (_http.Fields, _streams.ChunkSink)."""

    __slots__ = ("_lock", "held", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0
        self._lock = threading.Lock()  # freed on whichever thread lets go of the last reference

    def charge(self, n: int) -> None:
        with self._lock:
            if self.held + n > self.limit:
                raise guest_trap(
                    f"wasi:http/types.fields: the guest's fields would hold {self.held + n} bytes of "
                    f"the host's memory, more than {self.limit} (an eighth of the function's memory_mb)"
                )
            self.held += n

    def add(self, n: int) -> None:
        """Charged without a check: what a stream took within the room it was given."""
        with self._lock:
            self.held += n

    def refund(self, n: int) -> None:
        with self._lock:
            self.held -= n


def guest_trap(message: str) -> WasmtimeError:
    """The trap for a guest that asked its host for what the sandbox does not give (an interface
    it lacks, more than a limit allows): the guest ends as function_crashed with `message`, as
    wasmtime's own hosts end such a guest, and the function's log says why (`_linker._on_error`)."""
    return WasmtimeError(message)


def inv() -> Invocation:
    i = current.inv
    if i is None:
        raise RuntimeError("host call outside an invocation")
    return i
