"""An idle queue skips its passes while nothing changed, yet still runs what this process submits
at once and what another process enqueues within its poll interval."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gateway.context import EdgeRequest, EdgeResponse, empty_body
from gateway.functions import queue as queue_module
from gateway.functions.queue import EventStore, InvocationQueue

ADD_FROM_ANOTHER_PROCESS = """
import sys, time
from pathlib import Path
from gateway.functions.queue import Event, EventStore
store = EventStore(Path(sys.argv[1]))
now = time.time()
request = {"method": "POST", "scheme": "http", "host": "h", "path": "/x", "query": "", "headers": [],
           "client": "c", "peer": ""}
store.add(Event(id=sys.argv[2], function="fn", reference="fn", state="queued", attempts=0, created=now,
                due=now, request=request, body=b"from elsewhere"))
store.close()
"""


class CountingStore(EventStore):
    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.claims = 0

    def claim(self, now: float, limit: int) -> list:  # type: ignore[override]
        self.claims += 1
        return super().claim(now, limit)


async def _run_queue(tmp_path: Path, seen: list[str], test) -> None:  # type: ignore[no-untyped-def]
    async def invoke(reference: str, request: EdgeRequest) -> EdgeResponse:
        seen.append(request.request_id)
        return EdgeResponse(200, [], empty_body())

    store = CountingStore(tmp_path / "invocations.db")
    queue = InvocationQueue(tmp_path, invoke, store=store)
    queue.start()
    try:
        await test(queue, store)
    finally:
        await queue.aclose()


async def _until(predicate, timeout: float) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


def test_idle_passes_make_no_claims(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(queue_module, "POLL_S", 0.05)

    async def test(queue: InvocationQueue, store: CountingStore) -> None:
        await _until(lambda: store.claims >= 1, 30)
        await asyncio.sleep(0.6)  # ~12 poll intervals with nothing new
        assert store.claims == 1

    asyncio.run(_run_queue(tmp_path, [], test))


def test_an_event_of_this_process_runs_without_waiting_for_a_poll(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(queue_module, "POLL_S", 60.0)
    seen: list[str] = []

    async def test(queue: InvocationQueue, store: CountingStore) -> None:
        await _until(lambda: store.claims >= 1, 30)
        request = EdgeRequest("POST", "http", "h", "/x", b"", [], empty_body(), "c")
        event_id = await queue.submit("fn", request, body=b"here")
        await _until(lambda: event_id in seen, 30)  # far less than POLL_S

    asyncio.run(_run_queue(tmp_path, seen, test))


def test_an_event_of_another_process_is_picked_up_while_idle(tmp_path: Path) -> None:
    seen: list[str] = []

    async def test(queue: InvocationQueue, store: CountingStore) -> None:
        await _until(lambda: store.claims >= 1, 30)
        await asyncio.sleep(2.5 * queue_module.POLL_S)  # idle passes: the check alone
        proc = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-c", ADD_FROM_ANOTHER_PROCESS, str(tmp_path / "invocations.db"), "ev-other"],
            capture_output=True,
            timeout=60,
        )
        assert proc.returncode == 0, proc.stderr.decode()
        await _until(lambda: "ev-other" in seen, 30)

    asyncio.run(_run_queue(tmp_path, seen, test))
