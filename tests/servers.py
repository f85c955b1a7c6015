"""Real servers on loopback ports for tests: uvicorn in a thread of its own, on its own loop.

Tests talk to these with real HTTP over real sockets, which is the only way to see streaming and
time to first byte (httpx's ASGITransport buffers whole bodies).
"""

from __future__ import annotations

import asyncio
import random
import socket
import threading
import time
from pathlib import Path
from typing import Any

import uvicorn


def _ephemeral_low() -> int:
    """The first port of the range the kernel hands to outgoing connections."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port() -> int:
    """A loopback port free now, for a server started soon after. Chosen below the ephemeral
    range: a port from bind(0) is one the kernel also gives outgoing connections, and one of those
    (any test's client) took it between the pick and a node's bind ("Address already in use" in
    a fleet test, December 2026)."""
    low = _ephemeral_low()
    for _ in range(200 if low > 20000 else 0):
        port = random.randrange(10000, low)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:  # taken: try another
                continue
            return port
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _QuietServer(uvicorn.Server):
    def install_signal_handlers(self) -> None:  # uvicorn < 0.29
        pass

    def capture_signals(self):  # type: ignore[no-untyped-def]
        import contextlib

        return contextlib.nullcontext()


class ServerThread:
    def __init__(self, app: Any, *, lifespan: str = "on", port: int | None = None, **options: Any) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=self.port,
            lifespan=lifespan,
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=5,
            proxy_headers=False,
            **options,  # e.g. date_header/server_header off for a gateway, as `edgefn serve` runs it
        )
        self.server = _QuietServer(self.config)
        self.thread = threading.Thread(target=self._run, daemon=True, name=f"server:{self.port}")
        self.error: BaseException | None = None

    def _run(self) -> None:
        try:
            asyncio.run(self.server.serve())
        except BaseException as exc:  # reported by start() to the test
            self.error = exc

    def start(self, timeout: float = 120.0) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive():
                raise RuntimeError(f"server on port {self.port} failed to start: {self.error!r}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"server on port {self.port} did not start in {timeout} s")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
