"""Running a node: the public listener and the admin listener in one event loop, N worker processes.

Both listeners are uvicorn servers sharing one loop and one `Gateway`. Signals are handled here
rather than by each uvicorn server (each would replace the other's handler): SIGTERM or SIGINT asks
both to stop accepting and lets in-flight requests, streams included, finish.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import ctypes
import dataclasses
import gc
import logging
import multiprocessing
import multiprocessing.connection
import os
import resource
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Generator
from multiprocessing.process import BaseProcess
from pathlib import Path

import uvicorn

from gateway.admin.app import admin_app
from gateway.app import Gateway
from gateway.connection import Acceptor, Http11Protocol, JoinedHeadProtocol
from gateway.observability import LoopBatchedHandler
from routes import Config

log = logging.getLogger("edgefn.server")

GRACEFUL_S = 30
RESTART_EVERY_S = 5.0  # at most one restart of a worker's place per this many seconds
# The young generation's threshold once serving (CPython's default 700; 3.13 raised it to 2,000).
YOUNG_THRESHOLD = 5_000


class _Server(uvicorn.Server):
    """uvicorn's server; with `accept_bursts`, an Acceptor on each listening socket as well (see
    gateway/connection.py). Only for a socket no other process accepts on: processes sharing one
    are all woken for a connection, and one taking a burst in a pass kept 61 and 56 of 64
    keep-alive connections; the public listener of each worker is its own (`bind_each`), the
    admin listener, shared by the workers, keeps uvloop's one connection a pass."""

    _exit_wakes: tuple[asyncio.AbstractEventLoop, asyncio.Event] | None = None
    _exit_asked = False

    def __init__(self, config: uvicorn.Config, *, accept_bursts: bool = False) -> None:
        super().__init__(config)
        self.accept_bursts = accept_bursts
        self._acceptors: list[Acceptor] = []

    @property  # type: ignore[override]
    def should_exit(self) -> bool:
        return self._exit_asked

    @should_exit.setter
    def should_exit(self, value: bool) -> None:
        """Set by `serve_sockets`'s signal handlers, or by another thread (tests): it wakes
        `main_loop` at once."""
        self._exit_asked = value
        wakes = self._exit_wakes
        if value and wakes is not None and not wakes[0].is_closed():
            wakes[0].call_soon_threadsafe(wakes[1].set)

    async def main_loop(self) -> None:
        """uvicorn's, but waking once a second instead of ten times: its `on_tick` refreshes the
        `date` header once a second and looks at `should_exit`, which now wakes this at once. An
        idle node woke 20 times a second for its two listeners."""
        exit_asked = asyncio.Event()
        self._exit_wakes = (asyncio.get_running_loop(), exit_asked)
        counter = 0
        while not await self.on_tick(counter):
            counter = (counter + 10) % 864000  # a multiple of ten: a tick that refreshes the date
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(exit_asked.wait(), 1.0)

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield  # signals belong to `serve`, which stops every listener at once

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if not self.accept_bursts or self.config.ssl is not None:  # TLS: uvicorn's own accept alone
            return
        config, loop = self.config, asyncio.get_running_loop()

        def protocol() -> asyncio.Protocol:  # what uvicorn's own server makes for a connection
            return config.http_protocol_class(  # type: ignore[call-arg,no-any-return]
                config=config, server_state=self.server_state, app_state=self.lifespan.state
            )

        self._acceptors = [Acceptor(sock, protocol, loop) for sock in sockets or ()]

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for acceptor in self._acceptors:
            acceptor.close()
        self._acceptors = []
        await super().shutdown(sockets)


def split_listen(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    return host.strip("[]") or "127.0.0.1", int(port)


BACKLOG = 2048  # uvicorn's default


def bind(listen: str, *, reuse_port: bool = False) -> socket.socket:
    host, port = split_listen(listen)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP matters: asyncio sets TCP_NODELAY on accepted sockets only when the listener's
    # proto says TCP; without it every keep-alive response waits ~40 ms for a delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    # Listening from the start: a connection made while the gateway is still starting waits in the
    # backlog instead of being refused (health checks answer ready a moment before uvicorn serves).
    sock.listen(BACKLOG)
    sock.set_inheritable(True)
    return sock


def configure_logging(level: str = "INFO") -> None:
    logging.basicConfig(
        level=level,
        format="%(message)s" if level != "DEBUG" else "%(levelname)s %(name)s %(message)s",
        handlers=[LoopBatchedHandler(sys.stderr)],
    )


async def serve_sockets(config: Config, public: socket.socket, admin: socket.socket | None) -> None:
    gateway = Gateway(config)
    node = config.node
    servers = [
        _Server(
            uvicorn.Config(
                gateway,
                http=JoinedHeadProtocol.bounded(node.max_request_head_bytes, node.request_head_timeout_s),
                ws="none",  # HTTP/1.1 only (connection.Http11Protocol)
                lifespan="on",
                log_config=None,
                access_log=False,
                proxy_headers=False,
                timeout_graceful_shutdown=GRACEFUL_S,
                server_header=False,
                date_header=False,  # the gateway adds `date` itself, only when the target sent none
            ),
            accept_bursts=True,
        )
    ]
    if admin is not None:
        servers.append(
            _Server(
                uvicorn.Config(
                    admin_app(gateway),
                    http=Http11Protocol.bounded(node.max_request_head_bytes, node.request_head_timeout_s),
                    ws="none",
                    lifespan="off",
                    log_config=None,
                    access_log=False,
                    server_header=False,
                )
            )
        )
    loop = asyncio.get_running_loop()

    def stop() -> None:
        log.info("shutting down: letting in-flight requests finish")
        for s in servers:
            s.should_exit = True

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop)
    # The public server runs the lifespan (functions load there); admin starts alongside.
    tasks = [asyncio.create_task(servers[0].serve(sockets=[public]))]
    if admin is not None:
        tasks.append(asyncio.create_task(servers[1].serve(sockets=[admin])))
    settle = asyncio.create_task(_settle_collector_once_started(servers[0]))
    try:
        await asyncio.gather(*tasks)
    finally:
        settle.cancel()


async def _settle_collector_once_started(server: uvicorn.Server) -> None:
    """Move what start-up built (route tables, components, modules: ~70,000 objects) out of the
    collector's reach. Every full collection walked all of it again: 40-100 ms pauses a few times
    a minute under load, the p99 of a function request at one connection (30-40 ms; 9-11 ms
    frozen, 3 alternating pairs, docs/performance.md). Objects made later are collected as before.

    Then the young generation's threshold is raised. A served request leaves no garbage, but one
    reused hello has more than 700 container objects alive at its peak, so at the default a young
    collection ran every ~50 requests for nothing, and at 64 in flight each one walked every
    request's objects: 11 us of collection a request at one caller, 38-50 us at 64; at 5,000, one
    collection in 20,000 requests at either (in process, docs/performance.md)."""
    while not server.started:
        await asyncio.sleep(0.05)
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, *gc.get_threshold()[1:])


def run(config: Config, public: socket.socket, admin: socket.socket | None) -> None:
    """Run the listeners on uvloop (a dependency; asyncio's own loop should it be missing)."""
    try:
        import uvloop
    except ModuleNotFoundError:
        asyncio.run(serve_sockets(config, public, admin))
        return
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(serve_sockets(config, public, admin))


def _stop_with_parent(parent: int) -> None:
    """A worker outlives a node process killed with SIGKILL (or crashed): it would go on serving
    the inherited sockets, holding its fleet membership, queue entries and slots, with nothing
    left to stop it. Linux sends it SIGTERM instead (prctl PR_SET_PDEATHSIG), a graceful stop."""
    if sys.platform != "linux":
        return
    pr_set_pdeathsig = 1
    if ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM) != 0:
        log.warning("cannot ask to stop with the node process: %s", os.strerror(ctypes.get_errno()))
    if os.getppid() != parent:  # the node process died before the request took effect
        os.kill(os.getpid(), signal.SIGTERM)


_NODE_SIGNALS = {signal.SIGTERM, signal.SIGINT}


def _worker(
    config: Config,
    publics: list[socket.socket],
    place: int,
    admin: socket.socket | None,
    level: str,
    parent: int,
) -> None:
    # Forked with the node's handlers (`forward` would terminate this worker's siblings) and with
    # its signals blocked while it forked (`start_worker`): the defaults first, then the signals.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _NODE_SIGNALS)
    # The other workers' sockets: held here, one would stay open after the node lets it go.
    for other, sock in enumerate(publics):
        if other != place:
            sock.close()
    public = publics[place]
    _stop_with_parent(parent)
    configure_logging(level)
    run(config, public, admin)


def _supervise(
    procs: list[BaseProcess],
    start_worker: Callable[[int], BaseProcess],
    stopping: Callable[[], bool],
    give_up: Callable[[int], None],
) -> None:
    """Wait for the workers to end. One killed by a signal (the OOM killer, a SIGKILL) while the
    node runs is replaced, so the node keeps its N processes; one that exited by itself is not (a
    start-up error would only repeat), and its place is given up (`give_up`). Each worker's place
    restarts at most once per RESTART_EVERY_S, so a worker killed at every start is no busy loop,
    while workers killed together (the OOM killer taking several) are all replaced at once:
    spaced node-wide, the second of two waited 5 s, with no worker serving."""
    restarted = [-RESTART_EVERY_S] * len(procs)
    due: dict[int, float] = {}  # place -> when its replacement may start
    running = list(procs)  # by sentinel, not `exitcode`: reading that reaps, and a reaped one is missed
    while running or due:
        timeout = max(0.0, min(due.values()) - time.monotonic()) if due else None
        ready = multiprocessing.connection.wait([p.sentinel for p in running], timeout)
        for p in [p for p in running if p.sentinel in ready]:
            running.remove(p)
            p.join()  # the sentinel closes a moment before the exit status can be read
            if stopping():
                continue
            place = procs.index(p)
            if p.exitcode is None or p.exitcode >= 0:
                log.warning("worker %d exited (status %s); not replaced", p.pid, p.exitcode)
                give_up(place)
                continue
            log.warning("worker %d was killed (signal %d); starting another", p.pid, -p.exitcode)
            due[place] = restarted[place] + RESTART_EVERY_S
        for place, at in sorted(due.items()):
            if stopping():
                due.clear()
            elif at <= time.monotonic():
                del due[place]
                restarted[place] = time.monotonic()
                procs[place] = start_worker(place)
                running.append(procs[place])


def worker_context() -> multiprocessing.context.ForkContext | multiprocessing.context.SpawnContext:
    """Workers are forked from the node process, which first imports what a worker runs
    (gateway/worker_preload.py) and runs no thread of its own: a worker starts without the
    imports (0.4-0.9 s), so a killed one is replaced in the time it takes to load its functions
    (one function: 0.14-0.15 s from the kill to serving, against 0.86-1.14 s spawned;
    docs/performance.md). Not from multiprocessing's fork server: killing that one process (an OOM
    kill, a stray `pkill`) cut the node off from its workers' exit statuses, and the node stopped.
    Should the node ever run a thread by then, workers are spawned instead: a fork copies the
    locks other threads hold, held for good."""
    if threading.active_count() > 1:
        log.warning("the node process runs %d threads: workers are spawned", threading.active_count())
        return multiprocessing.get_context("spawn")
    import gateway.worker_preload  # noqa: F401

    return multiprocessing.get_context("fork")


def hashed_components(config: Config) -> Config:
    """The config with each function's component hashed here, in the node process, once: every
    worker then loads that component, a replacement too, as it loads that config (`serve`); from
    its compiled artifact, without reading the file (a killed worker of a one-function node was
    ready 55 ms after the kill, 32 ms this way). The files are hashed side by side on threads,
    ended before any fork.
    One that cannot be read is left to the worker, which fails to start with its own error."""
    from wasm_runtime import hash_file

    def hashed(path: Path) -> str | None:
        try:
            return hash_file(path)
        except OSError as exc:
            log.debug("not hashing %s: %s", path, exc)
            return None

    paths = sorted({Path(f.component) for f in config.functions.values()})
    if not paths:
        return config
    with concurrent.futures.ThreadPoolExecutor(min(len(paths), os.cpu_count() or 1)) as pool:
        sha = dict(zip(paths, pool.map(hashed, paths), strict=True))
    functions = {
        name: dataclasses.replace(f, sha256=sha[Path(f.component)]) for name, f in config.functions.items()
    }
    return dataclasses.replace(config, functions=functions)


def bind_each(listen: str, n: int) -> list[socket.socket]:
    """`n` listening sockets on one address, one for each worker (SO_REUSEPORT): the kernel
    spreads new connections over them by address, where on one shared socket every worker was
    woken for each and whichever took it first kept it (64 keep-alive connections split 6/58 and
    61/3 between two workers). A dead worker's socket stays open here, so connections the kernel
    gives it wait in its backlog for its replacement (~0.15 s) rather than being refused. The
    address is bound once without SO_REUSEPORT first, so a port held by anyone else is an error
    as before, not a share of its traffic."""
    bind(listen).close()
    first = bind(listen, reuse_port=True)
    host = split_listen(listen)[0]
    port = first.getsockname()[1]  # listen may say port 0
    return [first] + [bind(f"[{host}]:{port}", reuse_port=True) for _ in range(n - 1)]


def raise_open_files_limit() -> None:
    """Every connection, upstream connection and held stream is a descriptor, and a process's soft
    limit is often 1,024 where its hard limit is far higher: a node would stop accepting at about a
    thousand clients. So the soft limit is raised to the hard one, as Go does for every program
    and nginx's `worker_rlimit_nofile` is set for; workers inherit it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = 1 << 20 if hard == resource.RLIM_INFINITY else hard
    if soft == resource.RLIM_INFINITY or soft >= target:
        return
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError) as exc:
        log.warning("open files: soft limit %d kept (raising it to %d failed: %s)", soft, target, exc)
        return
    log.info("open files: soft limit raised from %d to %d", soft, target)


def serve(config: Config, workers: int = 1, level: str = "INFO") -> int:
    raise_open_files_limit()
    publics = bind_each(config.node.listen, workers) if workers > 1 else [bind(config.node.listen)]
    admin = bind(config.node.admin_listen) if config.node.admin_listen else None
    log.info(
        "edgefn %s listening on http://%s (admin http://%s), %d worker(s)",
        config.node.name,
        config.node.listen,
        config.node.admin_listen,
        workers,
    )
    if workers <= 1:
        run(config, publics[0], admin)
        return 0
    # Each worker accepts on a public socket of its own and the shared admin socket; each has its
    # own gateway and runtime.
    config = hashed_components(config)
    ctx = worker_context()

    # Every worker, a replacement too, serves the config the node read and checked at its start,
    # not the file as it is then: one edited since (even broken: its replacement failed to start
    # and its place was given up) takes effect when the node restarts, for all workers at once.
    def start_worker(place: int) -> BaseProcess:
        args = (config, publics, place, admin, level, os.getpid())
        p = ctx.Process(target=_worker, args=args, daemon=False)
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, _NODE_SIGNALS)  # see `_worker`
        try:
            p.start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        return p

    procs = [start_worker(place) for place in range(workers)]
    stopping = False

    def forward(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for p in procs:
            if p.pid is not None and p.is_alive():
                p.terminate() if signum == signal.SIGTERM else p.kill()

    def interrupted(_signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True  # children get SIGINT from the terminal themselves; none is restarted

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, interrupted)

    def give_up(place: int) -> None:
        """Close the place's socket (no worker holds it now): the kernel gives its connections to
        the other workers' sockets instead of a backlog nobody reads."""
        publics[place].close()

    _supervise(procs, start_worker, lambda: stopping, give_up)
    return max((p.exitcode or 0) for p in procs)
