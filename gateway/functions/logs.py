"""Function logs as Lambda writes them: START, the guest's lines, END, REPORT.

Every line goes three ways: into a bounded ring per function (what `GET /functions/NAME/logs`
and `edgefn logs NAME` show), to anyone following that function, and as one JSON object to the
`edgefn.function` logger (the gateway log). Lines are kept as records, not strings, so a follower
can filter by request id and the JSON log needs no parsing.

A guest may print anything, secrets included: values the caller names as secret are masked in
guest lines before they are kept or written anywhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from json.encoder import encode_basestring_ascii as _q
from typing import NamedTuple

from gateway.observability import emit_line

log = logging.getLogger("edgefn.function")

RING_LINES = 1000
FOLLOW_BUFFER = 10_000  # lines a slow follower may fall behind before it is cut off
MASK = "****"


class LogLine(NamedTuple):
    """One line of a function's log, shared by its ring, its followers and the JSON log: immutable,
    and a tuple because a frozen dataclass's `__init__` (`object.__setattr__` per field) was twice
    its cost, five lines a request."""

    ts: float
    function: str
    version: str
    request_id: str
    stream: str  # "platform" (START/END/REPORT), "stdout" or "stderr"
    message: str

    def as_dict(self) -> dict[str, object]:
        return self._asdict()

    def as_json(self) -> str:
        """`json.dumps(self.as_dict(), separators=(",", ":"))`, from a template as the access log
        line is: the dict and the encoder object made for each call were most of a line's cost."""
        return (
            f'{{"ts":{self.ts!r},"function":{_q(self.function)},"version":{_q(self.version)},'
            f'"request_id":{_q(self.request_id)},"stream":{_q(self.stream)},"message":{_q(self.message)}}}'
        )


@dataclass
class ReportFigures:
    duration_ms: float
    memory_mb: int
    max_memory_bytes: int = 0
    init_ms: float | None = None

    def text(self, request_id: str) -> str:
        parts = [
            f"REPORT RequestId: {request_id}",
            f"Duration: {self.duration_ms:.2f} ms",
            f"Billed Duration: {billed_ms(self.duration_ms)} ms",
            f"Memory Size: {self.memory_mb} MB",
        ]
        if self.max_memory_bytes:
            parts.append(f"Max Memory Used: {math.ceil(self.max_memory_bytes / (1 << 20))} MB")
        if self.init_ms is not None:
            parts.append(f"Init Duration: {self.init_ms:.2f} ms")
        return "\t".join(parts)


def billed_ms(duration_ms: float) -> int:
    """Lambda bills whole milliseconds, rounded up; a run that took no measurable time bills 1."""
    return max(1, math.ceil(round(duration_ms, 6)))


def mask(line: str, secrets: Iterable[str]) -> str:
    for value in secrets:
        if value and len(value) >= 4:  # masking "a" would destroy every line without hiding anything
            line = line.replace(value, MASK)
    return line


class _Follower:
    def __init__(self, function: str) -> None:
        self.function = function
        self.loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue[LogLine | None] = asyncio.Queue(FOLLOW_BUFFER)

    def offer(self, line: LogLine) -> None:
        try:
            self.queue.put_nowait(line)
        except asyncio.QueueFull:
            # A follower that cannot keep up is ended rather than allowed to grow without bound.
            with contextlib.suppress(asyncio.QueueEmpty):
                self.queue.get_nowait()
            self.queue.put_nowait(None)


class FunctionLogs:
    """Rings of recent lines per function, followers, and the JSON log."""

    def __init__(self, ring_lines: int = RING_LINES) -> None:
        self.ring_lines = ring_lines
        self._rings: dict[str, deque[LogLine]] = {}
        self._followers: set[_Follower] = set()
        self._lock = threading.Lock()

    def emit(self, line: LogLine) -> None:
        with self._lock:
            ring = self._rings.get(line.function)
            if ring is None:
                ring = self._rings[line.function] = deque(maxlen=self.ring_lines)
            ring.append(line)
            followers = [f for f in self._followers if f.function == line.function] if self._followers else []
        for follower in followers:
            try:
                follower.loop.call_soon_threadsafe(follower.offer, line)
            except RuntimeError:  # the follower's loop is gone; it cannot be listening
                self._followers.discard(follower)
        if log.isEnabledFor(logging.INFO):
            emit_line(log, line.as_json())

    def lines(self, function: str, limit: int | None = None, request_id: str | None = None) -> list[LogLine]:
        with self._lock:
            kept = list(self._rings.get(function, ()))
        if request_id is not None:
            kept = [line for line in kept if line.request_id == request_id]
        return kept[-limit:] if limit else kept

    @contextlib.asynccontextmanager
    async def follow(self, function: str) -> AsyncIterator[asyncio.Queue[LogLine | None]]:
        """New lines of `function` as they are written; None in the queue means "fell behind"."""
        follower = _Follower(function)
        with self._lock:
            self._followers.add(follower)
        try:
            yield follower.queue
        finally:
            with self._lock:
                self._followers.discard(follower)

    # Lambda's platform lines -----------------------------------------------------------------

    def platform(self, function: str, version: str, request_id: str, message: str) -> None:
        self.emit(LogLine(time.time(), function, version, request_id, "platform", message))

    def start(self, function: str, version: str, request_id: str) -> None:
        self.platform(function, version, request_id, f"START RequestId: {request_id} Version: {version}")

    def end(self, function: str, version: str, request_id: str, report: ReportFigures) -> None:
        self.platform(function, version, request_id, f"END RequestId: {request_id}")
        self.platform(function, version, request_id, report.text(request_id))

    def guest(
        self,
        function: str,
        version: str,
        request_id: str,
        stream: str,
        line: str,
        secrets: Iterable[str] = (),
    ) -> None:
        self.emit(LogLine(time.time(), function, version, request_id, stream, mask(line, secrets)))
