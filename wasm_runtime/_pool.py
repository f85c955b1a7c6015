"""Warm instances of one function: sized to its recent demand, and provisioned ahead of it.

With `instance_reuse = N` an instance may serve N requests. A fixed pool of 4 idle instances meant
that under load (64 concurrent requests) most requests still instantiated, so the pool is sized to
demand: it keeps as many idle instances as the function has had invocations in flight at once
recently (the peak over the current and the previous `WINDOW_S`), bounded by a memory budget
counted in the function's `memory_mb` (the most one instance may grow to). Demand that falls away
shrinks the pool within two windows.

`provisioned = P` is Lambda's provisioned concurrency: P instances are made when the function is
loaded, off the request path, and made again in the background whenever a request spends one
(it reached `instance_reuse`, or failed), so a burst of up to P requests never pays for
instantiation. An instance out serving a request counts towards P: it comes back. Refilling on
every take instead made one instance per request at 64 connections with P = 64, all thrown away
when the served ones came back (December 2026).

A pool belongs to one function configuration (its caller builds it), never to a component: two
functions built from the same file have different environments and secrets, and an instance keeps
its globals between requests.

With `instance_reuse = 0` (a fresh instance per request) the pool is `fresh`: it holds instances made
ahead of need, off the request path, each of which serves exactly one request and is then thrown
away, so "a fresh instance per request" stays true while the request no longer waits ~0.7-0.9 ms
for a hello's instantiation. They are sized like warm ones (the recent peak of requests in flight,
within the memory budget) and made by one background thread at the lowest CPU priority, when the
request that took one has finished with its guest: made alongside a fresh guest's first run (whose
memory is all new to the caches), an instantiation slowed that run by about as much as it saved,
and at the same priority on a busy machine it took the guests' CPU. With no core to spare the
maker falls behind and requests instantiate for themselves, as without it. A never-used instance
holds nothing of any request: it is made with no invocation on its thread, so a host call that
needs one (environment, a request) fails while it is made.
"""

from __future__ import annotations

import collections
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from wasmtime import Store

if TYPE_CHECKING:
    from ._context import HostHeld
    from ._hostcall import Export

WINDOW_S = 10.0
# Invocations a pool runs on guest threads after one of its inline runs was moved to a thread,
# doubled at each move, until INLINE_FORGIVE inline runs in a row (see `WarmPool.runs_inline`).
INLINE_RETRY = 100
INLINE_FORGIVE = 1000


@dataclass(eq=False)
class Warm:
    store: Store
    handle: Export  # the guest's wasi:http handler
    memory_probe: Export | None = None  # see _memory_probe
    served: int = 0
    single_use: bool = False  # made ahead for a fresh pool: serves one request, then is spent
    held: HostHeld | None = None  # what its guest has the host keep (set by the runtime)


class WarmPool:
    def __init__(
        self, memory_mb: int, *, provisioned: int = 0, budget_mb: int = 4096, fresh: bool = False
    ) -> None:
        if fresh and provisioned:
            raise ValueError("provisioned instances need instance_reuse of 1 or more")
        self.memory_mb = memory_mb
        self.provisioned = provisioned
        self.fresh = fresh
        self.cap = max(provisioned, budget_mb // max(1, memory_mb), 1)
        self.in_flight = 0
        self.refilling = 0  # instantiations under way in the background
        self._unclaimed = 0  # of those, not yet started by the maker or a helper (`claim`)
        self.made = 0  # instances made in the background (provisioned), since start
        self.out = 0  # pooled instances serving a request now (they come back unless spent)
        self._idle: collections.deque[Warm] = collections.deque()
        self._lock = threading.Lock()
        self._peak_now = 0
        self._peak_before = 0
        self._window_end = time.monotonic() + WINDOW_S
        self.inline_moves = 0  # inline runs moved to a guest thread (runtime.Runtime._run_inline)
        self._strikes = 0  # moves since the last INLINE_FORGIVE inline runs in a row
        self._streak = 0
        self._threaded_left = 0

    @property
    def idle(self) -> int:
        return len(self._idle)

    def _roll(self, now: float) -> None:
        if now >= self._window_end:
            gone = int((now - self._window_end) // WINDOW_S)
            self._peak_before = self._peak_now if gone == 0 else 0
            self._peak_now = self.in_flight
            self._window_end = now + WINDOW_S

    @property
    def limit(self) -> int:
        """Idle instances worth keeping now."""
        return max(self.provisioned, min(self.cap, max(self._peak_now, self._peak_before)))

    def runs_inline(self) -> bool:
        """Whether the next invocation may run on the event loop's thread (event loop only).
        A pool whose inline run had to move (it waited, or ran long) runs the next INLINE_RETRY *
        2**(moves-1) on threads: a function that keeps moving costs the loop one budget per
        doubling. Moves now and then (a rare long run) are forgiven after INLINE_FORGIVE inline
        runs in a row, rather than sending ever more of the function to threads."""
        if self.fresh:
            return False
        if self._threaded_left:
            self._threaded_left -= 1
            return False
        return True

    def seasoned(self) -> bool:
        """Whether the instance `take` would give now has served before. Instantiating, or an
        instance's first run (milliseconds for a Python guest), is better done on a thread beside
        the loop's work than on the loop."""
        with self._lock:
            return bool(self._idle) and self._idle[-1].served > 0

    def ran_inline(self) -> None:
        self._streak += 1
        if self._streak >= INLINE_FORGIVE:
            self._strikes = 0

    def moved_to_thread(self) -> None:
        self.inline_moves += 1
        self._strikes += 1
        self._streak = 0
        self._threaded_left = INLINE_RETRY << min(self._strikes - 1, 20)

    def take(self) -> Warm | None:
        """An idle instance (or None: instantiate), counting the invocation as in flight."""
        with self._lock:
            self._roll(time.monotonic())
            self.in_flight += 1
            self._peak_now = max(self._peak_now, self.in_flight)
            if not self._idle:
                return None
            self.out += 1
            return self._idle.pop()

    def done(self, warm: Warm | None, *, taken: bool) -> None:
        """The invocation ended; `warm` is its instance if it may serve again, `taken` says
        whether `take` had given it one."""
        with self._lock:
            self.in_flight -= 1
            if taken:
                self.out -= 1
            self._roll(time.monotonic())
            limit = self.limit
            if warm is not None and len(self._idle) < limit:
                self._idle.append(warm)
            while len(self._idle) > limit:
                self._idle.popleft()  # the oldest: demand fell away

    def wanted(self) -> int:
        """How many instances to make now (and counts them as under way): provisioned ones that
        are missing, or for a fresh pool, the idle ones that recent demand wants (a taken one never
        comes back, so those out serving do not count)."""
        with self._lock:
            if self.fresh:
                self._roll(time.monotonic())
                missing = self.limit - len(self._idle) - self.refilling
            else:
                missing = self.provisioned - len(self._idle) - self.refilling - self.out
            if missing > 0:
                self.refilling += missing
                self._unclaimed += missing
            return max(0, missing)

    def claim(self) -> bool:
        """Takes one of the instantiations `wanted` counted, for the thread that will make it:
        the maker has a job for each, and at start-up helpers make them beside it."""
        with self._lock:
            if self._unclaimed <= 0:
                return False
            self._unclaimed -= 1
            return True

    def add_made(self, warm: Warm | None) -> None:
        """A background instantiation ended (`None`: it failed)."""
        with self._lock:
            self.refilling -= 1
            if warm is not None:
                self.made += 1
                if len(self._idle) < max(self.limit, self.provisioned):
                    self._idle.append(warm)

    def clear(self) -> None:
        with self._lock:
            self._idle.clear()
