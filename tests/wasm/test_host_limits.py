"""What a guest can make its host keep or make is bounded, as wasmtime bounds it since
GHSA-852m-cvvp-9p4w: a `fields` (FIELDS_MAX_BYTES), all the fields an instance's guest made while
they live (an eighth of its memory_mb), the host resources one instance holds at once
(MAX_LIVE_RESOURCES) and random bytes asked for at once (RANDOM_MAX_BYTES). Past a bound the guest
traps as function_crashed, saying which, and the runtime goes on serving. Without the bounds the
host kept ~25 MB more a second for a guest growing a `fields` or holding handles (outside the
guest's own memory limit), and 64 MiB of random bytes took a worker past 5 GB."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from wasm_runtime._hostcall import MAX_LIVE_RESOURCES
from wasmtime import WasmtimeError

from wasm_runtime import FunctionTrap, Limits
from wasm_runtime._canon import Ok
from wasm_runtime._context import current
from wasm_runtime._http import ENTRY_BYTES, FIELDS_MAX_BYTES, Fields
from wasm_runtime._streams import SINK_CAPACITY, ChunkSink, OutputStream
from wasm_runtime._wasi import RANDOM_MAX_BYTES

from .conftest import arun
from .helpers import drain, request, runtime

LIMITS = Limits(memory_mb=128, timeout_s=30)


@pytest.mark.parametrize(
    ("path", "said"),
    [
        ("/fields/1000", f"more than the sandbox keeps for one fields ({FIELDS_MAX_BYTES})"),
        ("/keep/10000", f"more than {LIMITS.memory_mb << 17} (an eighth of the function's memory_mb)"),
        ("/handles", f"holds {MAX_LIVE_RESOURCES} host resources at once"),
        (f"/random/{4 * RANDOM_MAX_BYTES}", f"{4 * RANDOM_MAX_BYTES} bytes asked for at once"),
    ],
    ids=["fields", "fields-kept", "handles", "random"],
)
def test_a_guest_past_a_host_bound_traps_saying_which_and_the_runtime_goes_on(
    components: dict[str, Path], data_dir: Path, path: str, said: str
) -> None:
    async def main() -> tuple[BaseException | None, float, list[str], int, bytes]:
        async with runtime(data_dir) as rt:
            hog = await rt.load(components["hosthog"])
            lines: list[str] = []
            error: BaseException | None = None
            start = time.monotonic()
            try:
                await drain(
                    await rt.invoke(hog, request(path), limits=LIMITS, log=lambda s, line: lines.append(line))
                )
            except FunctionTrap as exc:
                error = exc
            elapsed = time.monotonic() - start
            ok = await rt.invoke(hog, request("/ok"), limits=LIMITS)
            return error, elapsed, lines, ok.status, await drain(ok)

    error, elapsed, lines, ok_status, ok_body = arun(main())
    assert isinstance(error, FunctionTrap) and error.code == "function_crashed", error
    assert said in str(error), error
    assert any(said in line for line in lines), lines  # the function's own log says why
    assert elapsed < 20, "the bound was not what stopped it"
    assert (ok_status, ok_body) == (200, b"ok")


def test_fields_dropped_give_their_bytes_back(components: dict[str, Path], data_dir: Path) -> None:
    """5,000 fields of 10 KB made and dropped one after another: 50 MB in all, never more than one
    alive, within an eighth of 128 MB; kept, they are refused past it (above)."""

    async def main() -> tuple[int, bytes]:
        async with runtime(data_dir) as rt:
            hog = await rt.load(components["hosthog"])
            resp = await rt.invoke(hog, request("/churn/10000"), limits=LIMITS)
            return resp.status, await drain(resp)

    assert arun(main()) == (200, b"0 kept")


def test_bodies_of_requests_never_sent_stop_getting_room_at_the_instance_bound(
    components: dict[str, Path], data_dir: Path
) -> None:
    """64 KiB into the body of one outgoing request after another, none sent: check-write gives no
    more room once they hold an eighth of memory_mb together (each alone may take 1 MiB), and the
    room comes back when they are dropped (the guest then answers). Without the bound the host
    queued 64 KiB more for each new request until the guest's own memory ran out."""

    async def main() -> tuple[int, bytes]:
        async with runtime(data_dir) as rt:
            hog = await rt.load(components["hosthog"])
            resp = await rt.invoke(hog, request("/bodies/65536"), limits=LIMITS)
            return resp.status, await drain(resp)

    status, body = arun(main())
    written = int(body.split()[0])
    assert status == 200 and body.endswith(b" written")
    assert written == LIMITS.memory_mb << 17


def test_a_write_past_what_check_write_permits_traps() -> None:
    """A stream queues no more than its room (what check-write permits): a guest ignoring it
    would otherwise have the host keep all it writes."""
    sink = ChunkSink(_Alone())  # type: ignore[arg-type]
    stream = OutputStream(sink)
    current.inv = sink._inv  # type: ignore[assignment]
    try:
        assert stream.check_write() == Ok(SINK_CAPACITY)
        assert stream.write(b"a" * SINK_CAPACITY) == Ok(None)  # all it may queue, nobody reading
        assert stream.check_write() == Ok(0)
        with pytest.raises(WasmtimeError, match="1 bytes where check-write permits 0"):
            stream.write(b"a")
    finally:
        current.inv = None


class _Alone:
    """An invocation as a stream sees it, with nobody reading its sink."""

    held = None
    io_max = SINK_CAPACITY
    cond = threading.Condition()
    unflushed: set[object] = set()

    def post(self, fn: object, *args: object, hold: bool = False) -> bool:
        return True


def test_random_bytes_within_the_bound_are_given(components: dict[str, Path], data_dir: Path) -> None:
    async def main() -> tuple[int, bytes]:
        async with runtime(data_dir) as rt:
            hog = await rt.load(components["hosthog"])
            resp = await rt.invoke(hog, request(f"/random/{RANDOM_MAX_BYTES}"), limits=LIMITS)
            return resp.status, await drain(resp)

    assert arun(main()) == (200, str(RANDOM_MAX_BYTES).encode())


def test_a_fields_counts_what_it_holds_now() -> None:
    """Replacing or deleting gives room back; a copy starts from its original's size; headers the
    host made from a received message are not counted against the guest."""
    value = b"v" * 1000
    per_entry = len("x-a") + len(value) + ENTRY_BYTES
    fields = Fields.from_list([("x-a", value)]).value
    room = FIELDS_MAX_BYTES // per_entry
    for _ in range(room - 1):
        fields.append("x-a", value)
    with pytest.raises(WasmtimeError, match="more than the sandbox keeps"):
        fields.append("x-a", value)
    assert fields.size == room * per_entry <= FIELDS_MAX_BYTES
    fields.set("x-a", [value])
    assert fields.size == per_entry
    fields.append("x-b", value)
    fields.delete("x-a")
    assert fields.size == len("x-b") + len(value) + ENTRY_BYTES
    assert fields.clone().size == fields.size
    with pytest.raises(WasmtimeError):
        Fields.from_list([("x-a", value)] * (room + 1))
    with pytest.raises(WasmtimeError):
        fields.set("x-a", [value] * (room + 1))
    # a request head at the listener's default bound (64 KiB), passed on whole by the guest
    head = [(f"x-{i}", b"h" * 300) for i in range(200)]
    assert sum(len(n) + len(v) + 4 for n, v in head) < 64 * 1024
    assert Fields.from_list(head).value.size <= FIELDS_MAX_BYTES
    received = Fields([("cookie", b"c" * (2 * FIELDS_MAX_BYTES))], immutable=True)
    assert received.get("cookie") == [b"c" * (2 * FIELDS_MAX_BYTES)]


@pytest.mark.parametrize(("status", "answer"), [(101, 200), (103, 200), (199, 200), (204, 204), (599, 599)])
def test_a_final_status_is_200_to_599(
    components: dict[str, Path], data_dir: Path, status: int, answer: int
) -> None:
    """`set-status-code` refuses a 1xx: it went out as the final answer, a 101 without an upgrade
    (which a proxy in front may take for a tunnel) or a 103 that left the client waiting."""

    async def main() -> tuple[int, bytes]:
        async with runtime(data_dir) as rt:
            hog = await rt.load(components["hosthog"])
            resp = await rt.invoke(hog, request(f"/status/{status}"), limits=LIMITS)
            return resp.status, await drain(resp)

    got, body = arun(main())
    assert got == answer
    assert body == (b"refused %d" % status if answer != status else b"a body")
