"""Cache purges told to every process of one node without a fleet (`serve --workers N`).

Each worker has its own cache, so an admin purge accepted by one worker must reach the others, or
they keep serving what was just purged. A fleet does this through Redis pub/sub (gateway/fleet.py);
a node on its own (`control_plane = "sqlite"`) does it here, with no server to run:

- every process binds a Unix datagram socket `data_dir/run/purge/<pid>-<random>.sock` at start-up,
  before it serves anything, and reads it from its event loop;
- the process that takes a purge sends it as one datagram to every other socket in the directory,
  connected, so a receiver whose queue is full makes the sender wait (never drops the purge), up to
  `send_timeout_s`; the answer says how many processes took it.

Why sockets and not purge records in SQLite polled by every worker: the kernel delivers a datagram
at once and exactly once, a worker never replays a purge it did not see (a later worker's cache
starts empty, and its socket exists before its first request), there is nothing to prune but the
files of dead processes, and the sender knows how many processes took the purge. A polled table
would add a read every few hundred milliseconds to every worker and only guess that count.

A socket whose process died (SIGKILL, a crash) refuses the connection: its file is removed. The
directory is opened once and paths go through `/proc/self/fd/N/`, so a long `data_dir` does not
meet the 108-byte limit of a socket path.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import socket
from pathlib import Path
from typing import Any

from edge.cache import EdgeCache

log = logging.getLogger("edgefn.cache")

SEND_TIMEOUT_S = 5.0
# A purge's key or prefix is at most this many characters (checked by the admin API), so one
# datagram always holds it (JSON escapes included) below Linux's default socket buffer (208 KiB).
MAX_PURGE_CHARS = 8192
_RECV_BYTES = 1 << 18


class NodePurgeError(Exception):
    """Some live processes of the node did not take a purge in time (their cache still holds it)."""


class NodePurges:
    """This process's end of the node's purge fan-out: receives purges into `cache`, sends them on."""

    def __init__(self, directory: Path, cache: EdgeCache, *, send_timeout_s: float = SEND_TIMEOUT_S) -> None:
        self.directory = directory
        self.cache = cache
        self.send_timeout_s = send_timeout_s
        self.name = f"{os.getpid()}-{secrets.token_hex(4)}.sock"
        self._dir_fd = -1
        self._sock: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _path(self, name: str) -> str:
        return f"/proc/self/fd/{self._dir_fd}/{name}"

    def start(self) -> None:
        """Bind this process's socket and read it from the running loop. Call before serving."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self._dir_fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC)
        try:
            sock.bind(self._path(self.name))
        except OSError as exc:
            sock.close()
            os.close(self._dir_fd)
            raise OSError(
                f"cannot bind the cache purge socket in {self.directory} (purges must reach every "
                f"worker of the node): {exc}"
            ) from exc
        self._sock = sock
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(sock.fileno(), self._receive)
        for name in self._peers():  # files of processes that died since the last purge
            probe = self._connect(name)
            if probe is not None:
                probe.close()

    def close(self) -> None:
        if self._sock is None:
            return
        assert self._loop is not None
        self._loop.remove_reader(self._sock.fileno())
        self._sock.close()
        self._sock = None
        try:
            os.unlink(self.name, dir_fd=self._dir_fd)
        finally:
            os.close(self._dir_fd)

    # sending -------------------------------------------------------------------------------------

    async def broadcast(self, *, key: str | None = None, prefix: str | None = None) -> int:
        """Tell every other process of the node to purge as this one just did; answers how many
        took it. Raises NodePurgeError when a live one did not within `send_timeout_s`."""
        payload: dict[str, Any] = {"key": key} if key is not None else {"prefix": prefix}
        took, late = await self._tell(payload)
        if late:
            raise NodePurgeError(
                f"{len(late)} process(es) of this node did not take the purge within "
                f"{self.send_timeout_s:g} s (stopped or stuck?): {', '.join(late)}"
            )
        return took

    async def invalidate(self, partition: str, key: str) -> None:
        """An unsafe request succeeded here (RFC 9111 4.4): the other processes' stored answers for
        its URI go too, before the client has its answer, so its next request cannot hit a stale
        one on another worker. A process that does not take it in time is logged, not waited for."""
        _, late = await self._tell({"invalidate": [partition, key]})
        if late:
            log.warning("invalidation of %s not taken in time by: %s", key, ", ".join(late))

    async def _tell(self, payload: dict[str, Any]) -> tuple[int, list[str]]:
        """Send `payload` to every other process at once: how many took it, and which live ones
        did not within `send_timeout_s`."""
        assert self._sock is not None, "start() has not run"
        data = json.dumps({**payload, "sender": self.name}).encode()
        peers = self._peers()
        results = await asyncio.gather(*(self._send(name, data) for name in peers))
        late = [name for name, took in zip(peers, results, strict=True) if took is None]
        return sum(1 for took in results if took), late

    def _peers(self) -> list[str]:
        return sorted(n for n in os.listdir(self._dir_fd) if n.endswith(".sock") and n != self.name)

    def _connect(self, name: str) -> socket.socket | None:
        """A socket connected to `name`, or None when no process has it (a dead one's file goes)."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC)
        try:
            sock.connect(self._path(name))
        except ConnectionRefusedError:
            sock.close()
            log.info("removing the purge socket of a process that is gone: %s", name)
            with contextlib.suppress(FileNotFoundError):  # another process removed it first
                os.unlink(name, dir_fd=self._dir_fd)
            return None
        except FileNotFoundError:
            sock.close()
            return None  # its process stopped and removed it since the listing
        except BaseException:
            sock.close()
            raise
        return sock

    async def _send(self, name: str, data: bytes) -> bool | None:
        """True: taken; False: no such process (any more); None: not taken in time."""
        sock = self._connect(name)
        if sock is None:
            return False
        assert self._loop is not None
        try:
            await asyncio.wait_for(self._loop.sock_sendall(sock, data), self.send_timeout_s)
        except ConnectionRefusedError:
            return False  # it stopped between connect and send
        except TimeoutError:
            return None
        finally:
            sock.close()
        return True

    # receiving -----------------------------------------------------------------------------------

    def _receive(self) -> None:
        assert self._sock is not None
        while True:
            try:
                data = self._sock.recv(_RECV_BYTES)
            except BlockingIOError:
                return
            self._apply(data)

    def _apply(self, data: bytes) -> None:
        try:
            payload = json.loads(data)
        except ValueError:
            log.warning("node purge datagram that is not JSON, ignored: %r", data[:200])
            return
        key = payload.get("key") if isinstance(payload, dict) else None
        prefix = payload.get("prefix") if isinstance(payload, dict) else None
        uri = payload.get("invalidate") if isinstance(payload, dict) else None
        if isinstance(uri, list) and len(uri) == 2 and all(isinstance(x, str) for x in uri):
            self.cache.invalidate(uri[0], uri[1])  # [partition, key]
            return
        if isinstance(key, str) and key:
            count = self.cache.purge_key(key)
        elif isinstance(prefix, str):
            count = self.cache.purge_prefix(prefix)
        else:
            log.warning("node purge datagram without a key or prefix, ignored: %r", data[:200])
            return
        log.info(json.dumps({"event": "node-purge", "from": payload.get("sender"), "purged": count}))
