"""Reserved concurrency counted across the processes of one node.

`serve --workers N` runs N processes on one port, and two gateways may share a `data_dir` for a
moment while one replaces the other. Counting in each process alone let a function with
`reserved_concurrency = 2` run 2 x N invocations at once. Here slot i of a function is an
exclusive POSIX record lock on byte i of the function's file under `data_dir/run/slots/`: the
kernel arbitrates between processes, and it drops every lock of a process that dies, so a crashed
worker never leaks a slot (a counter in shared memory would, and a Redis lease needs a server).

POSIX record locks belong to a process, not to a file descriptor, so two holders in one process
never conflict in the kernel: the slots this process holds are tracked here, per file, and never
tried again until released. Taking a free slot costs one `fcntl` call when the first slot tried is
free; a refusal tries every slot below the limit (one call each).
"""

from __future__ import annotations

import errno
import fcntl
import os
import random
import threading
from pathlib import Path


class NodeSlots:
    """The `SharedSlots` of a node without a fleet: `acquire` answers a slot name or None (full)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)

    async def acquire(self, function: str, limit: int) -> str | None:
        return _Slots.of(self.directory / function).take(limit)

    async def release(self, function: str, slot: str) -> None:
        _Slots.of(self.directory / function).give_back(int(slot))


class _Slots:
    """The slots of one function's lock file in this process (one per file: see the module)."""

    _open: dict[Path, _Slots] = {}
    _guard = threading.Lock()

    def __init__(self, path: Path) -> None:
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self.held: set[int] = set()

    @classmethod
    def of(cls, path: Path) -> _Slots:
        slots = cls._open.get(path)
        if slots is None:
            with cls._guard:
                slots = cls._open.get(path) or cls._open.setdefault(path, cls(path))
        return slots

    def take(self, limit: int) -> str | None:
        # A random start spreads processes over the slots, so a take seldom meets a held one.
        start = random.randrange(limit)
        for offset in range(limit):
            i = (start + offset) % limit
            if i in self.held:
                continue
            try:
                fcntl.lockf(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, i)
            except OSError as exc:
                if exc.errno in (errno.EACCES, errno.EAGAIN):
                    continue  # another process holds slot i
                raise
            self.held.add(i)
            return str(i)
        return None

    def give_back(self, i: int) -> None:
        self.held.discard(i)
        fcntl.lockf(self.fd, fcntl.LOCK_UN, 1, i)
