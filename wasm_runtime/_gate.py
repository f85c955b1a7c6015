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

A slot is handed directly from the guest leaving to the first waiter (FIFO), so one that yields
cannot take its own place back ahead of those waiting.
"""

from __future__ import annotations

import collections
import threading
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._context import Invocation

POLL_S = 0.05  # how soon a waiter notices its deadline or its client leaving


class RunGate:
    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError(f"max_executing must be at least 1, not {size}")
        self.size = size
        self.executing = 0
        self.peak = 0  # the most guests that executed at once, since start (for tests and gauges)
        self._queue: collections.deque[threading.Lock] = collections.deque()
        self._lock = threading.Lock()

    @property
    def waiting(self) -> int:
        return len(self._queue)

    def enter(self, inv: Invocation) -> None:
        """Wait for a place; raises the invocation's HostTimeout or HostCancelled if it ends first."""
        with self._lock:
            if self.executing < self.size and not self._queue:
                self.executing += 1
                self.peak = max(self.peak, self.executing)
                inv.in_gate = True
                return
            ticket = threading.Lock()
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

    def leave(self, inv: Invocation) -> None:
        """Give the place up (no-op if `inv` holds none); the first waiter gets it."""
        if not inv.in_gate:
            return
        inv.in_gate = False
        with self._lock:
            if self._queue:
                self._queue.popleft().release()
            else:
                self.executing -= 1

    def pause(self, inv: Invocation) -> None:
        """Let the first waiter run before `inv` goes on (a long computation, at an epoch check)."""
        if self._queue and inv.in_gate:
            self.leave(inv)
            self.enter(inv)
