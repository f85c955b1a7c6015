"""The run gate: how many guests execute at once, as opposed to how many hold a thread.

A guest holds its worker thread for as long as it runs (a held stream for minutes), so the thread
cap is in the hundreds. But a guest's host calls are Python, under one GIL: with 16 or 64 guests
executing at once, every host call fights the others for the GIL, and a hello invocation measured
~500 voluntary context switches and ~8 ms of CPU instead of ~13 and ~2 ms (bench.wasm_inproc
--concurrency, December 2026); throughput at 64 callers fell to a third of one caller's. So only
`size` guests (by default one: even two thrash the GIL, see runtime._default_executing) execute
at a time; the others wait here, off the GIL, in arrival order. A guest leaves the gate whenever
it blocks in a host wait (a stream's pause, a body that is not read yet, an outbound call), so held
streams keep one thread each but no place in the gate; and a guest that computes for long hands
its place on at every epoch check (20 ms) while others wait.

A place is handed directly from the guest leaving to the first in line (FIFO), so one that yields
cannot take its own place back ahead of those waiting. Two kinds wait in line: a running guest
coming back from a host wait (on its own thread, which sleeps on a ticket), and a new invocation,
which waits as a `Start` without any thread. A guest that finishes carries the next `Start` on its
own thread; one that only pauses has it started on another (`start`). Giving every new invocation
a thread of its own to wait on, 64 connections kept 64 threads queued here, and each hand-over
woke one of them to fight the event loop for the GIL: in process, hello reused at 64 callers
ran ~20 % slower than at one, with ~17 context switches a request against ~6 (December 2026).
"""

from __future__ import annotations

import _thread
import collections
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .errors import FunctionError, FunctionFailed

log = logging.getLogger("edgefn.wasm")

if TYPE_CHECKING:
    from ._context import Invocation

POLL_S = 0.05  # how soon a waiter notices its deadline or its client leaving


@dataclass(eq=False)
class Start:
    """A new invocation waiting for its first place. `run` runs it on the calling thread;
    `refuse` answers it instead (on its event loop's thread) when it is withdrawn from the line.
    `on_loop`: it runs on its event loop's thread (runtime.Runtime._run_inline), and `run` only
    tells the loop that the place is its own: called at once by whoever hands the place over."""

    inv: Invocation
    run: Callable[[], None]
    refuse: Callable[[FunctionError], None]
    on_loop: bool = False


_carried = threading.local()


def carried() -> Start | None:
    """The `Start` handed to this thread's guest as it finished (see `RunGate.leave`), taken.
    Kept per thread rather than returned, so that no error on the way out can lose it (a lost
    one would keep its place in the gate for ever)."""
    job: Start | None = getattr(_carried, "job", None)
    _carried.job = None
    return job


class RunGate:
    def __init__(self, size: int, start: Callable[[Start], None]) -> None:
        """`start` puts a `Start` on a guest thread of its own."""
        if size < 1:
            raise ValueError(f"max_executing must be at least 1, not {size}")
        self.size = size
        self.executing = 0
        self.peak = 0  # the most guests that executed at once, since start (for tests and gauges)
        self._start = start
        self._queue: collections.deque[Start | _thread.LockType] = collections.deque()
        self._lock = threading.Lock()
        self._closed = False

    @property
    def waiting(self) -> int:
        return len(self._queue)

    def _take_free_place(self, inv: Invocation) -> bool:
        """Under the lock: a place for `inv` if one is free and nobody waits for it."""
        if self.executing >= self.size or self._queue:
            return False
        self.executing += 1
        self.peak = max(self.peak, self.executing)
        inv.in_gate = True
        return True

    def admit(self, job: Start) -> bool:
        """A new invocation: True if it has a place now (the caller starts it on a thread), False
        if it waits in line, holding no thread, until a guest leaving hands it one."""
        with self._lock:
            if self._closed:
                raise FunctionFailed("the runtime is shutting down")
            if self._take_free_place(job.inv):
                return True
            self._queue.append(job)
            return False

    def enter_now(self, inv: Invocation) -> bool:
        """A place for `inv` if one is free and nobody waits (and the gate is open), else False:
        never in line."""
        with self._lock:
            return not self._closed and self._take_free_place(inv)

    def withdraw(self, job: Start) -> bool:
        """Take a `Start` out of the line (its deadline passed, or its caller left); False if it
        has been given a place already."""
        with self._lock:
            if job in self._queue:
                self._queue.remove(job)
                return True
            return False

    def close(self) -> list[Start]:
        """Admit nothing more; returns the `Start`s that were waiting, for the caller to refuse."""
        with self._lock:
            self._closed = True
            starts = [w for w in self._queue if isinstance(w, Start)]
            self._queue = collections.deque(w for w in self._queue if not isinstance(w, Start))
        return starts

    def enter(self, inv: Invocation) -> None:
        """A running guest waits for a place again; raises the invocation's HostTimeout or
        HostCancelled if it ends first."""
        with self._lock:
            if self._take_free_place(inv):
                return
            ticket = _thread.allocate_lock()
            ticket.acquire()
            self._queue.append(ticket)
        while not ticket.acquire(timeout=POLL_S):
            if inv.cancelled or time.monotonic() >= inv.deadline:
                with self._lock:
                    if ticket in self._queue:
                        self._queue.remove(ticket)
                        inv.check()  # raises: cancelled or past the deadline
                # handed a place in the same instant: take it, the caller finds out soon enough
                ticket.acquire()
                break
        inv.in_gate = True  # `executing` was left counting the place handed over

    def leave(self, inv: Invocation, *, finished: bool = False) -> None:
        """Give the place up (no-op if `inv` holds none); the first in line gets it. A `Start`
        handed the place is left for this thread to carry on with (`carried`) when `inv` has
        `finished`, else started on a thread of its own."""
        if not inv.in_gate:
            return
        inv.in_gate = False
        with self._lock:
            if not self._queue:
                self.executing -= 1
                return
            first = self._queue.popleft()
        if not isinstance(first, Start):  # a running guest's ticket
            first.release()
            return
        first.inv.in_gate = True  # `executing` is left counting the place handed over
        if first.on_loop:
            first.run()
            return
        if finished:
            _carried.job = first
            return
        try:
            self._start(first)
        except Exception as exc:  # no thread to be had: answer it, and pass the place on
            log.error("no guest thread for an invocation: %s", exc)
            self.leave(first.inv)
            error = FunctionFailed(f"no guest thread could be started: {exc}")
            first.inv.post(first.refuse, error, hold=False)

    def pause(self, inv: Invocation) -> None:
        """Let the first waiter run before `inv` goes on (a long computation, at an epoch check)."""
        if self._queue and inv.in_gate:
            self.leave(inv)
            self.enter(inv)
