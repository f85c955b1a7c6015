"""The Runtime: one Engine, its compiled components (_components.py), worker threads, and `invoke`.

Each invocation runs with its own Store (or a warm one when `instance_reuse` allows), a memory
cap (store limits) and a wall-clock deadline (epoch interruption, ticked by one thread every 10 ms
while a guest runs). It runs on a guest thread, where a runaway guest costs that thread and nothing
else (ctypes releases the GIL while wasm runs); or, a request without a body on a warm instance,
on the event loop's own thread (`Runtime._run_inline`), which it holds for at most INLINE_BUDGET_S
of CPU and one tick before it is moved to a guest thread and run again there from the start.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import ctypes
import hashlib
import importlib.metadata
import logging
import math
import os
import platform
import threading
import time
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any

from wasmtime import Config, Engine, Store, WasmtimeError
from wasmtime import _ffi as ffi

from . import _compat, _crossing, _memory_probe
from ._canon import Err, Ok
from ._compile import cache_settings
from ._components import Components, LoadedComponent, SlotCopy
from ._context import (
    GuestExit,
    HostAbort,
    HostCancelled,
    HostHeld,
    HostTimeout,
    Invocation,
    NeedsThread,
    current,
    run_posted,
)
from ._gate import RunGate, Start
from ._hostcall import ResourceTable
from ._http import IncomingRequest, OutgoingResponse, ResponseOutparam
from ._pool import Warm, WarmPool
from ._slots import DEFAULT_SLOTS, InstanceSlots, SlotStore
from ._streams import ChunkSink
from ._threads import GuestThreads, ThreadSlots
from .api import GuestRequest, GuestResponse, InvocationStats, Limits, OutboundTransport
from .errors import (
    FunctionError,
    FunctionFailed,
    FunctionTimeout,
    FunctionTrap,
    InvalidComponent,
)
from .outbound import HttpxTransport, OutboundPolicy

log = logging.getLogger("edgefn.wasm")

TICK_S = 0.01
DEFAULT_THREADS = 512  # threads are cheap; a held Python guest's instance memory is what bounds this
STATS_WAIT_S = 0.1
SHUTDOWN_WAIT_S = 10.0  # for running guests to end once cancelled (wasm is interrupted at once)
# A running guest is checked every CHECK_TICKS * TICK_S (20 ms) of its execution: cancelled or past
# its deadline, it stops; with others waiting for the run gate, it hands its place on.
CHECK_TICKS = 2
# The CPU time a guest may take on the event loop's thread (see `Runtime._run_inline`) before it
# is moved to a guest thread; checked at epoch ticks, so it takes at most this plus one tick. CPU
# time, not wall time: on a busy machine a run that is preempted, or waits for the GIL, is not
# a long run, and moving it threw away work for nothing. Not less: a componentize-py hello takes
# 7-9 ms of CPU once in some 10,000 requests (no host collection in it: likely the guest's own
# garbage collection; December 2026), and with 5 ms those runs moved, each sending the next
# hundred to threads.
INLINE_BUDGET_S = 0.02
WASMTIME_VERSION = importlib.metadata.version("wasmtime")


_CALLBACK_T, _FINALIZER_T = (ffi.dll.wasmtime_store_epoch_deadline_callback.argtypes[i] for i in (1, 3))


@_CALLBACK_T  # type: ignore[call-arg]  # typeshed takes a ctypes function type for data
def _on_epoch_deadline(_ctx: Any, _data: Any, delta: Any, kind: Any) -> int:
    """Runs on the guest's thread each time its epoch deadline passes: trap if the invocation
    is over (timeout, client gone, shutdown), else look again in CHECK_TICKS. This is what lets
    a CPU-bound guest be cancelled, not only one that is waiting in a host call."""
    try:
        return _epoch_check(delta, kind)
    except BaseException as exc:  # raised into wasmtime, an error here aborted the whole process
        log.exception("the epoch check failed; stopping the guest")
        return _trap(f"edgefn: runtime error at an epoch check: {exc}")


def _epoch_check(delta: Any, kind: Any) -> int:
    inv = current.inv
    if inv is not None:
        if inv.cancelled:
            inv.abort = inv.abort or HostCancelled("the client went away")
            return _trap("edgefn: invocation cancelled")
        if inv.gate is not None and not inv.inline:
            try:
                inv.gate.pause(inv)  # a long computation lets waiting guests run
            except HostAbort as exc:
                inv.abort = inv.abort or exc
                return _trap(f"edgefn: {exc}")
        remaining = inv.deadline - time.monotonic()
        if remaining <= 0:
            inv.abort = inv.abort or HostTimeout("the function's timeout expired")
            return _trap("edgefn: wall-clock timeout (interrupt)")
        if inv.inline:
            if time.thread_time() >= inv.inline_until:
                inv.abort = inv.abort or NeedsThread("it ran past its inline budget")
                return _trap("edgefn: moved to a guest thread")
            delta[0] = 1
        else:
            delta[0] = max(1, min(CHECK_TICKS, math.ceil(remaining / TICK_S)))
    else:
        delta[0] = CHECK_TICKS
    kind[0] = 0  # WASMTIME_UPDATE_DEADLINE_CONTINUE
    return 0


def _trap(message: str) -> int:
    err = ffi.wasmtime_error_new(message.encode())
    return ctypes.cast(err, ctypes.c_void_p).value or 0


def _engine_config() -> tuple[Config, str]:
    cfg = Config()
    cfg.epoch_interruption = True
    settings = f"wasmtime={WASMTIME_VERSION};epoch=1;arch={platform.machine()};{cache_settings()}"
    return cfg, hashlib.sha256(settings.encode()).hexdigest()[:16]


def _install_fastcall() -> None:
    if os.environ.get("EDGEFN_NO_FASTCALL"):
        log.info("wasm fast path disabled by EDGEFN_NO_FASTCALL")
        return
    try:
        from . import _fastcall  # type: ignore[attr-defined]
    except ModuleNotFoundError as exc:
        if exc.name != f"{__package__}._fastcall":
            raise
        log.info("wasm fast path (_fastcall) not present; using wasmtime-py's own conversions")
        return
    _fastcall.install()
    log.info("wasm fast path (_fastcall) installed")


class Runtime:
    def __init__(
        self,
        data_dir: Path,
        *,
        transport: OutboundTransport | None = None,
        max_threads: int = DEFAULT_THREADS,
        max_threads_per_function: int | None = None,
        cache_size: int = 32,
        warm_budget_mb: int = 4096,
        max_executing: int | None = None,
        instance_slots: int = DEFAULT_SLOTS,
    ) -> None:
        """`max_threads`: invocations that may run at once (each holds a thread while it runs,
        a streaming one for as long as its client reads); one function may hold at most
        `max_threads_per_function` of them (default: all but an eighth). Over either, a request
        waits within its own timeout, then gets FunctionThrottled (429).
        `max_executing`: of those, how many execute at once rather than wait in a host call
        (default: $EDGEFN_MAX_EXECUTING, else 1: see `_default_executing` and _gate.py).
        `instance_slots`: fresh instances made with their memory kept mapped (see _slots.py)."""
        cfg, self.engine_key = _engine_config()
        self.engine = Engine(cfg)
        self.slots = InstanceSlots(_engine_config()[0], instance_slots)
        self._engines = tuple(e for e in (self.engine, self.slots.engine) if e is not None)
        _compat.install()
        _install_fastcall()
        self.compiled_dir = Path(data_dir) / "compiled"
        self.components = Components(
            self.engine, self.engine_key, self.slots.engine, self.compiled_dir, cache_size
        )
        self.transport: OutboundTransport = transport or HttpxTransport()
        self._own_transport = transport is None
        self.threads = ThreadSlots(max_threads, max_threads_per_function)
        self.guests = GuestThreads("wasm")
        self.gate = RunGate(
            max_executing if max_executing is not None else _default_executing(), self.guests.start
        )
        self._active: set[Invocation] = set()
        self.warm_budget_mb = warm_budget_mb
        self._pools: dict[tuple[str, int, bool], WarmPool] = {}  # for callers that bring no pool
        self._maker = concurrent.futures.ThreadPoolExecutor(
            1, thread_name_prefix="wasm-warm", initializer=_lowest_priority
        )
        self._stop = threading.Event()
        self._running = 0  # guests on worker threads now; the ticker sleeps while this is 0
        self._running_changed = threading.Condition()
        self.epoch_ticks = 0  # how often the ticker moved the epoch (for tests and gauges)
        self.ran_inline = 0  # invocations that ran on the event loop's thread, since start
        self.moved_to_thread = 0  # inline runs dropped and run again on a guest thread
        self._ticker = threading.Thread(target=self._tick, name="wasm-epoch", daemon=True)
        self._ticker.start()

    @property
    def active(self) -> int:
        """Invocations running now (for a gauge)."""
        return len(self._active)

    def stats(self) -> dict[str, int]:
        """Gauges of the guest threads: the cap, running, waiting for a thread, throttled (total),
        executing and waiting to, and the threads made."""
        t = self.threads
        return {
            "threads": t.total,
            "threads_per_function": t.per_function,
            "running": t.running,
            "waiting_for_thread": t.waiting,
            "throttled": t.throttled,
            "executing": self.gate.executing,
            "waiting_to_execute": self.gate.waiting,
            "guest_threads": self.guests.count,  # made so far (idle ones are kept)
            "ran_inline": self.ran_inline,
            "moved_to_thread": self.moved_to_thread,
            "instance_slots_in_use": self.slots.in_use,
            "made_in_slots": self.slots.made,
        }

    def _tick(self) -> None:
        """Move the epoch every TICK_S while a guest runs, and wait without waking while none
        does: 100 wake-ups a second of an idle gateway cost ~13 % of a small request's CPU.
        Deadlines are relative to the epoch when they are set, so a pause never shortens one."""
        while True:
            with self._running_changed:
                while self._running == 0 and not self._stop.is_set():
                    self._running_changed.wait()
            if self._stop.wait(TICK_S):
                return
            for engine in self._engines:
                engine.increment_epoch()
            self.epoch_ticks += 1
            for inv in list(self._active):  # a guest computing between host calls holds no post long
                inv.send_held(late_only=True)

    def _guest_started(self) -> None:
        with self._running_changed:
            self._running += 1
            if self._running == 1:
                self._running_changed.notify()

    def _guest_ended(self) -> None:
        with self._running_changed:
            self._running -= 1

    # loading ---------------------------------------------------------------------------------

    def validate(self, wasm_bytes: bytes) -> None:
        """Raises InvalidComponent for what is not a wasi:http component, before any compiling."""
        self.components.validate(wasm_bytes)

    async def load(self, wasm: Path, *, sha256: str | None = None) -> LoadedComponent:
        """The component in `wasm`, compiled or from the compile cache (see _components.py);
        `sha256`, when the caller knows it, spares reading the file."""
        return await self.components.load(wasm, sha256=sha256)

    # warm instances ---------------------------------------------------------------------------

    def warm_pool(self, component: LoadedComponent, limits: Limits, *, provisioned: int = 0) -> WarmPool:
        """A pool of instances for one function configuration: warm ones to reuse, or with
        `instance_reuse = 0` never-used ones made ahead of need (see _pool.py); with
        `provisioned`, start making that many now, in the background (needs reuse)."""
        if provisioned and limits.instance_reuse < 1:
            raise ValueError("provisioned instances need instance_reuse of 1 or more")
        pool = WarmPool(
            limits.memory_mb,
            provisioned=provisioned,
            budget_mb=self.warm_budget_mb,
            fresh=limits.instance_reuse < 1,
        )
        self._provision(component, pool)
        return pool

    async def provisioned_ready(self, component: LoadedComponent, pool: WarmPool) -> None:
        """Makes the instances still queued for `pool` and returns once all are made (or failed).

        The maker is one thread at the lowest priority, for refills beside serving guests. At
        start-up no guest waits for the CPU, so helpers at normal priority, one per core beside
        the maker's, make the queued instances with it: instantiating is wasmtime's native code,
        outside the GIL (64 of hello, two cores: 74 ms on the maker alone, 42 with a helper)."""
        helpers = max(1, len(os.sched_getaffinity(0)) - 1) if hasattr(os, "sched_getaffinity") else 1
        made = (asyncio.to_thread(self._make_queued, component, pool) for _ in range(helpers))
        await asyncio.gather(*made)
        await asyncio.wrap_future(self._maker.submit(lambda: None))

    def _provision(self, comp: LoadedComponent, pool: WarmPool) -> None:
        if self._stop.is_set() or not (pool.fresh or (pool.provisioned and comp.reuse_ok)):
            return
        for _ in range(pool.wanted()):
            try:
                self._maker.submit(self._make, comp, pool)
            except RuntimeError:  # shut down between the check and the submit
                if pool.claim():
                    pool.add_made(None)

    def _make_queued(self, comp: LoadedComponent, pool: WarmPool) -> None:
        while not self._stop.is_set() and self._make(comp, pool):
            pass

    def _make(self, comp: LoadedComponent, pool: WarmPool) -> bool:
        """Makes one of the pool's queued instances; False when none was left to make."""
        if not pool.claim():
            return False
        warm: Warm | None = None
        try:
            warm = self._instantiate(comp, pool.memory_mb, CHECK_TICKS, single_use=pool.fresh)
            warm.single_use = pool.fresh
        except Exception:
            log.exception("making an instance of %s ahead of need failed", comp.name)
        finally:
            pool.add_made(warm)
        return True

    def _default_pool(self, comp: LoadedComponent, limits: Limits) -> WarmPool:
        """For callers that bring no pool. Fresh ones may be shared by every caller of a
        component: a never-used instance carries nothing of any function's configuration."""
        fresh = limits.instance_reuse < 1
        key = (comp.sha256, limits.memory_mb, fresh)
        pool = self._pools.get(key)
        if pool is None:
            pool = self._pools[key] = WarmPool(limits.memory_mb, budget_mb=self.warm_budget_mb, fresh=fresh)
        return pool

    # invocation ------------------------------------------------------------------------------

    async def invoke(
        self,
        component: LoadedComponent,
        request: GuestRequest,
        *,
        limits: Limits,
        env: Mapping[str, str] | None = None,
        outbound: OutboundPolicy | None = None,
        request_id: str = "",
        log: Callable[[str, str], None] | None = None,
        transport: OutboundTransport | None = None,
        function: str | None = None,
        pool: WarmPool | None = None,
    ) -> GuestResponse:
        """Run one request; `transport` replaces the runtime's for this invocation's outbound calls
        (edge functions use it to send "their own URL" down the gateway's pipeline). `function`
        names whose share of the guest threads this counts against (default: the component's);
        `pool` holds this function's warm instances (default: one per component and memory_mb,
        for callers that run a component under one configuration).
        The timeout runs from this call, so waiting for a thread is part of it. The guest runs on
        a guest thread, or, a request without a body on an instance that has served, on this
        event loop's thread (`_run_inline`)."""
        loop = asyncio.get_running_loop()

        def invocation() -> Invocation:
            return Invocation(
                loop=loop,
                request=request,
                limits=limits,
                env=env or {},
                outbound=outbound or OutboundPolicy(),
                transport=transport or self.transport,
                request_id=request_id,
                log_fn=log,
                io_max=component.io_max,
            )

        inv = invocation()
        if self._stop.is_set():
            raise FunctionFailed("the runtime is shutting down")
        key = function or component.sha256
        stats = InvocationStats()
        if pool is None:
            pool = self._default_pool(component, limits)
        stats.thread_wait_ms = await self.threads.acquire(key, inv.deadline) * 1000
        placed = False  # `inv` holds its place in the run gate already
        if request.body is None and component.reuse_ok and pool.runs_inline():
            if not self.gate.enter_now(inv):
                await self._wait_for_place(inv, key)
            placed = not pool.seasoned()
            if not placed:
                response = self._run_inline(component, inv, stats, key, pool)
                if response is not None:
                    return response
                deadline = inv.deadline  # the run again is the same invocation's, within its timeout
                inv = invocation()
                inv.deadline = deadline
                stats = InvocationStats()
                stats.thread_wait_ms = await self.threads.acquire(key, inv.deadline) * 1000
        return await self._run_on_thread(component, inv, stats, key, pool, placed)

    async def _run_on_thread(
        self,
        component: LoadedComponent,
        inv: Invocation,
        stats: InvocationStats,
        key: str,
        pool: WarmPool,
        placed: bool,
    ) -> GuestResponse:
        """Runs the invocation on a guest thread, at once if it has a place in the run gate
        (`placed`, or one free now), else when a guest leaving hands it one."""
        loop = inv.loop
        head: asyncio.Future[tuple[int, list[tuple[str, bytes]], ChunkSink]] = loop.create_future()
        ended: asyncio.Future[None] = loop.create_future()

        def refuse(error: FunctionError) -> None:
            self.threads.release(key)
            if not head.done():
                head.set_exception(error)

        job = Start(inv, lambda: self._run(component, inv, head, ended, stats, key, pool), refuse)
        expiry: asyncio.TimerHandle | None = None
        try:
            if placed or self.gate.admit(job):
                try:
                    self.guests.start(job)
                except BaseException:
                    self.gate.leave(inv)
                    raise
            else:
                expiry = self._watch_deadline(job)
        except BaseException:
            self.threads.release(key)
            raise
        try:
            status, headers, sink = await head
        except BaseException:
            inv.cancel()
            if expiry is not None and self.gate.withdraw(job):
                self.threads.release(key)
            raise
        finally:
            if expiry is not None:
                expiry.cancel()
        return GuestResponse(status, headers, self._body(inv, sink, ended), stats)

    async def _wait_for_place(self, inv: Invocation, key: str) -> None:
        """Waits in the run gate's line, without a thread, for a place to run `inv` on the event
        loop's thread. Waiting as a `Start` to be carried on a guest thread instead, an invocation
        that found a guest thread executing made the next one do the same: under load a chain of
        guest threads that never ended, and nothing ran inline again. Raises as `invoke` would
        (timeout, shutdown), with the thread slot released."""
        loop = inv.loop
        placed: asyncio.Future[None] = loop.create_future()

        def resume() -> None:  # on the loop, the place handed over
            if placed.done():  # its caller left meanwhile: pass the place on
                self.gate.leave(inv)
            else:
                placed.set_result(None)

        def refuse(error: FunctionError) -> None:
            if not placed.done():
                placed.set_exception(error)

        def hand_over() -> None:  # by whoever leaves the gate
            # Mostly an inline run on this loop's own thread: under load nearly every request
            # waits in line (docs/performance.md), and a post from here would wake the loop
            # through its self-pipe for a callback it can simply queue.
            if asyncio._get_running_loop() is loop:
                loop.call_soon(resume)
            else:
                inv.post(resume, hold=False)

        job = Start(inv, hand_over, refuse, on_loop=True)
        try:
            if self.gate.admit(job):
                return
            expiry = self._watch_deadline(job)
            try:
                await placed
            finally:
                expiry.cancel()
        except BaseException:
            if not self.gate.withdraw(job):
                self.gate.leave(inv)  # handed a place already (one on its way is passed on by resume)
            self.threads.release(key)
            raise

    def _run_inline(
        self, comp: LoadedComponent, inv: Invocation, stats: InvocationStats, key: str, pool: WarmPool
    ) -> GuestResponse | None:
        """Runs the invocation here, on the event loop's thread, holding the run gate's place that
        `inv` holds; returns None if it had to move to a guest thread (NeedsThread), its run dropped.

        A reused instance answers a small request in well under a millisecond, and on a guest
        thread the hand-over cost about as much: the thread's wake-up, and the GIL passed back and
        forth between it and a busy loop at each of its host calls. Here nothing is handed over.
        What the guest posts to the loop is kept until it returns, so a run that has to move leaves
        nothing behind: it is moved at its first wait or outbound request (which would hold up the
        loop, or need it), or at the first epoch tick past INLINE_BUDGET_S. Nothing it did could be
        seen outside (its request has no body to consume, its instance is thrown away), so it
        runs again from the start on a guest thread, and its pool runs the next ones there.
        Only requests without a body, on reused instances that have served before, are tried
        here: an instance's first run (a fresh one's, a new warm one's) takes milliseconds, which
        a guest thread overlaps with the loop's work (see `WarmPool.seasoned`)."""
        loop = inv.loop
        head: asyncio.Future[tuple[int, list[tuple[str, bytes]], ChunkSink]] = loop.create_future()
        ended: asyncio.Future[None] = loop.create_future()
        inv.inline = True
        inv.inline_until = time.thread_time() + INLINE_BUDGET_S
        self._run(comp, inv, head, ended, stats, key, pool)
        if isinstance(inv.abort, NeedsThread):
            self.moved_to_thread += 1
            pool.moved_to_thread()
            log.info("%s: runs on guest threads for now: %s", comp.name, inv.abort)
            return None
        self.ran_inline += 1
        pool.ran_inline()
        kept, inv.kept = inv.kept, []
        run_posted(kept)
        status, headers, sink = head.result()
        return GuestResponse(status, headers, self._body(inv, sink, ended), stats)

    def _watch_deadline(self, job: Start) -> asyncio.TimerHandle:
        """A `Start` in line holds no thread to notice its deadline: this takes it out of line
        and refuses it then (cancel the handle once it has its place, or its caller left)."""
        inv = job.inv
        return inv.loop.call_later(max(0.0, inv.deadline - time.monotonic()), self._expire, job)

    def _expire(self, job: Start) -> None:
        if self.gate.withdraw(job):
            job.refuse(_timed_out(job.inv))

    async def _body(
        self, inv: Invocation, sink: ChunkSink, ended: asyncio.Future[None]
    ) -> AsyncIterator[bytes]:
        finished = False
        try:
            async for chunk in sink.chunks():
                yield chunk
            finished = True
        finally:
            if not finished:
                inv.cancel()
        # The body is complete: the client must not wait for a guest that keeps working after
        # finishing it. A guest that returns promptly (nearly all) has its stats filled here;
        # otherwise they are filled when it returns. `ended` comes before the spent instance's
        # teardown, which the client does not wait for.
        if not ended.done():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(ended), STATS_WAIT_S)

    def _run(
        self,
        comp: LoadedComponent,
        inv: Invocation,
        head: asyncio.Future[Any],
        ended: asyncio.Future[None],
        stats: InvocationStats,
        key: str,
        pool: WarmPool | None,
    ) -> None:
        """The whole of one invocation on its guest thread (a `Start`'s `run`)."""
        t0 = time.perf_counter()
        self._active.add(inv)
        self._guest_started()
        outcome = _Outcome(inv, head)
        spent: list[Warm] = []
        try:
            self._execute(comp, inv, outcome, stats, pool, spent)
        except BaseException as exc:  # a bug here must still answer the caller, never hang it
            log.exception("invocation of %s failed inside the runtime", comp.name)
            outcome.fail(FunctionTrap(f"runtime error: {exc}"))
        finally:
            for cleanup in inv.cleanups:
                try:
                    cleanup()
                except Exception:
                    log.exception("cleanup after %s failed", comp.name)
            inv.release()
            current.inv = None
            self._active.discard(inv)
            self._guest_ended()
            stats.duration_ms = (time.perf_counter() - t0) * 1000
            self.threads.release(key)
            try:
                inv.post(_settle, ended, hold=False)  # and with it whatever the guest's posts held
            except RuntimeError:
                log.debug("the caller's event loop closed before %s ended", comp.name)
            # Only now, with the body's end and the stats on their way to the loop: tearing a used
            # Store down takes ~0.2 ms (unmapping its memory), and left to the garbage collector
            # (a spent instance is often in a reference cycle) it ran in the middle of a later
            # request, on whichever thread collected.
            for warm in spent:
                try:
                    warm.store.close()
                except Exception:
                    log.exception("tearing down an instance of %s failed", comp.name)

    def _instantiate(self, comp: LoadedComponent, memory_mb: int, ticks: int, *, single_use: bool) -> Warm:
        """A new instance; one that will serve a single request takes an instance slot if one is
        free (see _slots.py)."""
        src: LoadedComponent | SlotCopy = comp
        store = self.slots.store() if single_use and comp.slotted is not None else None
        if store is None:
            store = Store(self.engine)
        else:
            src = comp.slotted  # type: ignore[assignment]
        try:
            store.set_limits(memory_size=memory_mb << 20)
            ffi.wasmtime_store_epoch_deadline_callback(store.ptr(), _on_epoch_deadline, None, _NO_FINALIZER)
            _crossing.bind_table(store, ResourceTable())
            store.set_epoch_deadline(ticks)
            instance = src.linker.instantiate(store, src.component)
            func = instance.get_func(store, src.handle.index)
            if func is None:
                raise InvalidComponent(f"{comp.name}: handle is not a function")
            handle = _crossing.export(store, func, src.handle)
            plan = src.memory_probe
            probe = None if plan is None else instance.get_func(store, plan.index)
        except BaseException:
            store.close()  # now, not when the error's traceback lets go of it (it may hold a slot)
            raise
        held = HostHeld(memory_mb << 17)  # an eighth of its memory
        if plan is None or probe is None:
            return Warm(store, handle, None, held=held)
        return Warm(store, handle, _crossing.export(store, probe, plan), held=held)

    def _ticks(self, inv: Invocation) -> int:
        if inv.inline:
            return 1
        return max(1, min(CHECK_TICKS, math.ceil(max(0.0, inv.deadline - time.monotonic()) / TICK_S)))

    def _execute(
        self,
        comp: LoadedComponent,
        inv: Invocation,
        outcome: _Outcome,
        stats: InvocationStats,
        pool: WarmPool | None,
        spent: list[Warm],
    ) -> None:
        current.inv = inv
        inv.gate = self.gate  # the invocation holds a place in it already (RunGate.admit, leave)
        try:
            try:
                inv.check()  # it may have waited in line past its deadline, or its client gone
            except HostAbort as exc:
                outcome.fail(_timed_out(inv) if isinstance(exc, HostTimeout) else _cancelled())
                return
            fresh = inv.limits.instance_reuse < 1
            if pool is None or pool.fresh != fresh or not (fresh or comp.reuse_ok):
                self._serve(comp, inv, outcome, stats, None, spent)
                return
            kept: Warm | None = None
            taken = pool.take()
            try:
                kept = self._serve(comp, inv, outcome, stats, taken, spent)
            finally:
                pool.done(kept if comp.reuse_ok else None, taken=taken is not None)
                # Made now, while the answer goes out and the next request comes in, rather than
                # at the take: made alongside a fresh guest's first run, it slowed that run (its
                # memory is new to the caches) by about as much as it saved (see _pool.py).
                self._provision(comp, pool)
        finally:  # a guest thread carries on with the next in line; the loop's thread cannot
            self.gate.leave(inv, finished=not inv.inline)

    def _serve(
        self,
        comp: LoadedComponent,
        inv: Invocation,
        outcome: _Outcome,
        stats: InvocationStats,
        warm: Warm | None,
        spent: list[Warm],
    ) -> Warm | None:
        """Runs the request on `warm` (or a new instance); returns the instance if it may serve
        again, else adds it to `spent` (torn down once the caller has its answer)."""
        stats.fresh_instance = warm is None or warm.single_use
        error: FunctionError | None = None
        try:
            if warm is None:
                t = time.perf_counter()
                single = inv.limits.instance_reuse < 1 or not comp.reuse_ok
                warm = self._instantiate(comp, inv.limits.memory_mb, self._ticks(inv), single_use=single)
                stats.init_ms = (time.perf_counter() - t) * 1000
            else:
                warm.handle.set_epoch_deadline(self._ticks(inv))
            stats.instance_slot = isinstance(warm.store, SlotStore)
            inv.held = warm.held
            warm.handle(IncomingRequest(inv), ResponseOutparam(outcome.on_set))
            warm.served += 1
            stats.max_memory_bytes = _memory_used(comp, warm)
        except WasmtimeError as exc:
            error = self._classify(inv, exc)
        except InvalidComponent as exc:
            error = FunctionTrap(str(exc))
        if warm is not None:
            spent.append(warm)  # taken back out below if it may serve again
        exited = isinstance(error, _ExitOk)  # a normal end, but the instance cannot take another request
        if exited:
            error = None
        if error is None and not inv.response_set:
            if not stats.fresh_instance and not inv.body_read_started:
                log.warning(
                    "%s cannot serve a second request on one instance; using fresh instances", comp.name
                )
                comp.reuse_ok = False
                inv.cleanups.clear()
                return self._serve(comp, inv, outcome, stats, None, spent)
            error = FunctionFailed("the function returned without setting a response")
        if error is not None:
            outcome.fail(error)
            return None
        outcome.complete()
        if (
            warm is not None
            and not (exited or warm.single_use)
            and warm.served < inv.limits.instance_reuse
            and comp.reuse_ok
        ):
            spent.pop()
            return warm
        return None

    def _classify(self, inv: Invocation, exc: WasmtimeError) -> FunctionError:
        abort = inv.abort
        log.debug("guest call failed: %s (abort=%r, host_error=%r)", exc, abort, inv.host_error)
        if isinstance(abort, GuestExit):
            return _ExitOk() if abort.ok else FunctionFailed("the function exited with an error status")
        if isinstance(abort, NeedsThread):
            return FunctionFailed(f"moved to a guest thread: {abort}")  # kept, never delivered
        if isinstance(abort, HostTimeout):
            return _timed_out(inv)
        if isinstance(abort, HostCancelled) or inv.cancelled:
            # A guest that traps because its write failed after the client left did not crash.
            return _cancelled()
        text = str(exc)
        cause = text.split("Caused by:", 1)[-1] if "Caused by:" in text else text
        if "interrupt" in text or time.monotonic() >= inv.deadline:
            return _timed_out(inv)
        if inv.host_error is not None:
            return FunctionTrap(f"host error: {inv.host_error}")
        first = next((ln.strip() for ln in cause.splitlines() if ln.strip()), "trap")
        return FunctionTrap(f"the function crashed: {first}"[:500])

    async def aclose(self) -> None:
        """Stops every running guest (host waits are cancelled, wasm is interrupted by moving
        the epoch past every deadline), then the ticker and the worker threads."""
        self._stop.set()
        with self._running_changed:
            self._running_changed.notify()  # a sleeping ticker sees _stop and returns
        self.threads.close()
        running = list(self._active)
        for inv in running:
            inv.cancel()
        longest = max((inv.limits.timeout_s for inv in running), default=0.0)
        for _ in range(math.ceil(longest / TICK_S) + 2):
            for engine in self._engines:
                engine.increment_epoch()
        for job in self.gate.close():
            job.refuse(FunctionFailed("the runtime is shutting down"))
        await asyncio.to_thread(self._ticker.join, 1.0)
        await asyncio.to_thread(self.guests.close, SHUTDOWN_WAIT_S)
        await asyncio.to_thread(self._maker.shutdown, True, cancel_futures=True)
        self._pools.clear()
        if self._own_transport and isinstance(self.transport, HttpxTransport):
            await self.transport.aclose()


_NO_FINALIZER = _FINALIZER_T()


def _memory_used(comp: LoadedComponent, warm: Warm) -> int:
    """The guest's linear memory in bytes once its handler has returned (0 when unknown)."""
    if warm.memory_probe is None:
        return 0
    try:
        return warm.memory_probe() * _memory_probe.PAGE
    except WasmtimeError as exc:  # its deadline passed just now: the figure is lost, not the answer
        log.info("%s: could not read its memory size: %s", comp.name, str(exc).splitlines()[0])
        return 0


def _lowest_priority() -> None:
    """The maker thread yields the CPU to every guest: an instance made ahead of need is worth
    making only with a core to spare. Made at the same priority on a busy machine, it took the
    guest's CPU and cache and slowed its request by more than the instantiation it saved."""
    with contextlib.suppress(OSError, AttributeError):  # not permitted, or not on Linux
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)


def _timed_out(inv: Invocation) -> FunctionTimeout:
    return FunctionTimeout(f"the function ran longer than {inv.limits.timeout_s:g} s")


def _cancelled() -> FunctionFailed:
    return FunctionFailed("cancelled: the client went away")


def _settle(ended: asyncio.Future[None]) -> None:
    if not ended.done():
        ended.set_result(None)


def _default_executing() -> int:
    """$EDGEFN_MAX_EXECUTING (a deployment can set it without a config change), else 1.

    One per process, not one per core: a guest's host calls are Python under the process's one
    GIL, and two guests executing at once handed it back and forth at every host call. In process
    (`bench.wasm_inproc --concurrency 1,2,4,64`) two callers gave 357-380 hello/s at 3.3-3.5 ms of
    CPU and ~78 context switches each with 2 places, 440 hello/s at 2.5 ms and ~24 with 1; over
    HTTP at 64 connections one place gave 210-275 (reuse) and 130-141 (fresh) req/s against
    192-198 and 105-113 with two. Cores are used by worker processes (`serve --workers N`), each
    with its own GIL and its own gate. A compute-bound guest (little Python) could use a second
    place; such a deployment sets EDGEFN_MAX_EXECUTING.
    """
    text = os.environ.get("EDGEFN_MAX_EXECUTING", "").strip()
    if text:
        if not text.isdigit() or int(text) < 1:
            raise ValueError(f"EDGEFN_MAX_EXECUTING must be a whole number of at least 1, not {text!r}")
        return int(text)
    return 1


class _ExitOk(FunctionError):
    """Internal: the guest called exit(ok) — a normal end, but its instance is spent."""


class _Outcome:
    """Delivers the response head to the awaiting coroutine, then the body's end or error."""

    def __init__(self, inv: Invocation, head: asyncio.Future[Any]) -> None:
        self._inv = inv
        self._head = head
        self._response: OutgoingResponse | None = None

    def _resolve(self, value: Any = None, error: BaseException | None = None) -> None:
        def apply() -> None:
            if self._head.done():
                return
            if error is not None:
                self._head.set_exception(error)
            else:
                self._head.set_result(value)

        self._inv.post(apply)

    def on_set(self, response: Ok | Err) -> None:
        inv = self._inv
        if inv.response_set:
            raise WasmtimeError("response-outparam.set called twice")
        inv.response_set = True
        if isinstance(response, Err):
            code = response.value
            tag = getattr(code, "tag", code)
            self._resolve(error=FunctionFailed(f"the function answered with error-code {tag}"))
            return
        resp: OutgoingResponse = response.value
        self._response = resp
        fields = resp.headers()
        fields.immutable = True
        self._resolve((resp.status_code(), list(fields.entries_), resp.sink))

    def complete(self) -> None:
        resp = self._response
        if resp is None:
            return
        body = resp.body_
        if body is None:
            resp.sink.close()
        elif not body.finished:
            body.finished = True
            resp.sink.close(FunctionFailed("the function returned without finishing its response body"))

    def fail(self, error: FunctionError) -> None:
        if self._response is None:
            if not self._inv.response_set or not self._head.done():
                self._resolve(error=error)
            return
        self._response.sink.close(error)
