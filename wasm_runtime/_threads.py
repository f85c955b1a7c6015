"""Guest threads: how many invocations may run at once, and what a caller over the cap gets.

A guest holds its worker thread for as long as it runs, which for a streaming guest is as long as
its client reads. Handing invocations to a thread pool with an unbounded queue meant the request
after the last free thread got no answer at all until a stream ended, and that wait was not even
counted in its timeout. Here a caller takes a slot before its invocation is given a thread:

- at most `total` invocations run at once (the pool has exactly that many threads, so nothing ever
  queues inside the pool), and one function (`key`) at most `per_function`, so one function's held
  streams cannot take the threads every other function needs;
- a caller that finds no slot waits in line (first come, first served among those that could run)
  until its own deadline, which started when the request arrived, then gets `FunctionThrottled`
  (429 with Retry-After, Lambda's throttle), never a hang.

Slots are released from worker threads and taken on event loops, so the state is under a lock and a
waiter is woken with `call_soon_threadsafe` on its own loop.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
import time
from dataclasses import dataclass

from ._gate import Start, carried
from .errors import FunctionFailed, FunctionThrottled

log = logging.getLogger("edgefn.wasm")


@dataclass(eq=False)
class _Waiter:
    key: str
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[None]
    granted: bool = False
    error: BaseException | None = None


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class ThreadSlots:
    def __init__(self, total: int, per_function: int | None = None) -> None:
        if total < 1:
            raise ValueError(f"max_threads must be at least 1, not {total}")
        if per_function is None:
            per_function = max(1, total - max(1, total // 8)) if total > 1 else 1
        if not 1 <= per_function <= total:
            raise ValueError(f"max_threads_per_function must be between 1 and {total}, not {per_function}")
        self.total = total
        self.per_function = per_function
        self.running = 0
        self.throttled = 0  # callers that gave up waiting, since start
        self._by_key: collections.Counter[str] = collections.Counter()
        self._waiters: collections.deque[_Waiter] = collections.deque()
        self._lock = threading.Lock()
        self._closed = False

    @property
    def waiting(self) -> int:
        """Callers waiting for a thread now."""
        return len(self._waiters)

    def _fits(self, key: str) -> bool:
        return self.running < self.total and self._by_key[key] < self.per_function

    def _take(self, key: str) -> None:
        self.running += 1
        self._by_key[key] += 1

    async def acquire(self, key: str, deadline: float) -> float:
        """Take a slot for `key`, waiting at most until `deadline` (monotonic s); returns the
        seconds waited. Raises FunctionThrottled when the deadline passes first."""
        with self._lock:
            if self._closed:
                raise FunctionFailed("the runtime is shutting down")
            if self._fits(key):
                self._take(key)
                return 0.0
            loop = asyncio.get_running_loop()
            waiter = _Waiter(key, loop, loop.create_future())
            self._waiters.append(waiter)
        t0 = time.monotonic()
        try:
            await asyncio.wait_for(waiter.future, max(0.0, deadline - t0))
        except BaseException as exc:
            with self._lock:
                if waiter.granted:
                    # granted in the same instant the wait ended: hand the slot on
                    granted_too_late = True
                else:
                    granted_too_late = False
                    self._waiters.remove(waiter)
                    if isinstance(exc, TimeoutError):
                        self.throttled += 1
            if granted_too_late:
                self.release(key)
            if isinstance(exc, TimeoutError):
                raise FunctionThrottled(
                    f"no guest thread became free within the function's timeout "
                    f"({self.running} running, {self.per_function} per function, {self.total} in all)"
                ) from None
            raise
        if waiter.error is not None:
            raise waiter.error
        return time.monotonic() - t0

    def release(self, key: str) -> None:
        """Give a slot back (from any thread) and hand free slots to the waiters that fit."""
        woken: list[_Waiter] = []
        with self._lock:
            self.running -= 1
            self._by_key[key] -= 1
            if not self._by_key[key]:
                del self._by_key[key]
            if self._waiters:
                for waiter in list(self._waiters):
                    if self.running >= self.total:
                        break
                    if self._fits(waiter.key):
                        self._waiters.remove(waiter)
                        self._take(waiter.key)
                        waiter.granted = True
                        woken.append(waiter)
        for waiter in woken:
            self._notify(waiter)

    def close(self) -> None:
        """Refuse new callers and fail the waiting ones (the runtime is shutting down)."""
        with self._lock:
            self._closed = True
            waiting, self._waiters = list(self._waiters), collections.deque()
        for waiter in waiting:
            waiter.error = FunctionFailed("the runtime is shutting down")
            self._notify(waiter)

    def _notify(self, waiter: _Waiter) -> None:
        try:
            waiter.loop.call_soon_threadsafe(_wake, waiter.future)
        except RuntimeError:  # its loop has closed: nobody waits for this slot any more
            if waiter.granted:
                self.release(waiter.key)


class _Carrier:
    __slots__ = ("job", "wake")

    def __init__(self) -> None:
        self.job: Start | None = None
        self.wake = threading.Lock()
        self.wake.acquire()


class GuestThreads:
    """The threads guests run on, where concurrent.futures.ThreadPoolExecutor was.

    A job goes to the thread that went idle last, whose stack (and often the instance the guest
    reuses) is still in the caches; the executor woke whichever had waited longest. And a thread
    whose guest has finished carries on with the next one in line (RunGate.leave), so under load
    guests follow one another on one thread without a wake-up between them. Threads are made on
    demand and kept; ThreadSlots bounds how many jobs, and so how many threads, there are at once.
    """

    def __init__(self, name: str) -> None:
        self._name = name
        self._idle: list[_Carrier] = []
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._closed = False

    @property
    def count(self) -> int:
        return len(self._threads)

    def start(self, job: Start) -> None:
        with self._lock:
            if self._closed:
                raise RuntimeError("the guest threads are shut down")
            if self._idle:
                carrier = self._idle.pop()
                carrier.job = job
                carrier.wake.release()
                return
            thread = threading.Thread(
                target=self._carry, args=(job,), name=f"{self._name}_{len(self._threads)}", daemon=True
            )
            self._threads.append(thread)
        thread.start()

    def _carry(self, job: Start | None) -> None:
        carrier = _Carrier()
        while True:
            while job is not None:
                try:
                    job.run()
                except BaseException:  # a runtime bug; the job handed on, if any, is still carried
                    log.exception("a guest thread's job failed")
                job = carried()
            with self._lock:
                if self._closed:
                    return
                self._idle.append(carrier)
            carrier.wake.acquire()
            job, carrier.job = carrier.job, None
            if job is None:
                return

    def close(self, timeout_s: float) -> None:
        """Stop the idle threads, and wait up to `timeout_s` for the busy ones to finish."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
            threads = list(self._threads)
        for carrier in idle:
            carrier.wake.release()  # with no job: the thread returns
        deadline = time.monotonic() + timeout_s
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                log.warning("guest thread %s still running at shutdown", thread.name)
