"""The host's own rules, tested directly: wasi:http fields, canonical value conversion, poll."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from wasmtime.component import Variant

from wasm_runtime import Limits
from wasm_runtime._canon import Err, Ok
from wasm_runtime._http import Fields

from .conftest import arun
from .helpers import drain, invocation, request, runtime


def test_fields_validate_names_and_values() -> None:
    assert isinstance(Fields.from_list([("x-ok", b"v")]), Ok)
    assert Fields.from_list([("bad name", b"v")]) == Err(Variant("invalid-syntax"))
    assert Fields.from_list([("x", b"a\r\nb")]) == Err(Variant("invalid-syntax"))
    assert Fields.from_list([("Connection", b"close")]) == Err(Variant("forbidden"))
    f = Fields()
    assert f.append("X-Multi", b"1") == Ok(None)
    assert f.append("x-multi", b"2") == Ok(None)
    assert f.get("X-MULTI") == [b"1", b"2"]
    assert f.set("x-multi", [b"3"]) == Ok(None)
    assert f.entries() == [("x-multi", b"3")]
    assert f.delete("x-multi") == Ok(None)
    assert not f.has("x-multi")
    assert f.set("transfer-encoding", [b"chunked"]) == Err(Variant("forbidden"))


def test_immutable_fields_refuse_changes_but_clones_are_mutable() -> None:
    f = Fields([("a", b"1")], immutable=True)
    assert f.set("a", [b"2"]) == Err(Variant("immutable"))
    assert f.append("b", b"2") == Err(Variant("immutable"))
    assert f.delete("a") == Err(Variant("immutable"))
    c = f.clone()
    assert c.append("b", b"2") == Ok(None)
    assert f.entries() == [("a", b"1")]


def test_poll_with_several_pollables(components: dict[str, Path], data_dir: Path) -> None:
    """wasmtime 50.0.1 fails `poll` with 2+ pollables (list<borrow<T>>); 49.0.0 passes. Keep this."""

    async def body():  # type: ignore[no-untyped-def]
        await asyncio.sleep(0.1)
        yield b"late"

    async def main() -> dict:
        async with runtime(data_dir) as rt:
            comp = await rt.load(components["poller"])
            resp = await rt.invoke(comp, request("/", "POST", body=body()), limits=Limits())
            return json.loads(await drain(resp))

    result = arun(main())
    assert result["order"] == [["t50"], ["body"], ["t150"], ["t300"]]
    assert result["elapsed_ms"] >= 290


@pytest.mark.parametrize("version", ["0.2.0", "0.2.3", "0.2.12"])
def test_every_0_2_version_links(version: str) -> None:
    from wasmtime import Config, Engine
    from wasmtime.component import Component

    from wasm_runtime._linker import build_linker, import_plan

    wat = f"""(component
      (import "wasi:cli/environment@{version}" (instance
        (export "get-arguments" (func (result (list string))))))
    )"""
    engine = Engine(Config())
    component = Component(engine, wat)
    build_linker(engine, import_plan(engine, component))


def test_host_calls_and_drops_cross_in_c(components: dict[str, Path], data_dir: Path) -> None:
    """wasmtime calls the host through `_hostcall`, not through wasmtime-py's ctypes callbacks."""
    from wasm_runtime import _hostcall

    async def main() -> tuple[dict[str, int], dict[str, int], bytes]:
        async with runtime(data_dir) as rt:
            comp = await rt.load(components["hello"])
            before = _hostcall.stats()
            resp = await rt.invoke(comp, request("/"), limits=Limits())
            return before, _hostcall.stats(), await drain(resp)

    before, after, body = arun(main())
    assert body
    assert after["calls"] - before["calls"] >= 30  # a hello request makes 34-48 host calls
    assert after["drops"] > before["drops"]  # the guest drops some of its handles itself


def test_held_posts_reach_the_loop_together_and_in_order() -> None:
    """A running guest's posts wait for a kick (it waits, returns, or HOLD_S passes), then the
    loop runs them all in one wake-up, in the order they were posted."""
    import threading
    import time

    from wasm_runtime._context import HOLD_S, LoopPoster

    async def main() -> tuple[list[int], list[int], list[int]]:
        loop = asyncio.get_running_loop()
        poster = LoopPoster(loop)
        ran: list[int] = []
        wakeups: list[int] = []
        real_drain = poster._drain
        poster._drain = lambda: (wakeups.append(len(poster._calls)), real_drain())  # type: ignore[method-assign]

        def guest() -> None:
            for i in range(3):
                poster.post(ran.append, (i,), hold=True)
            poster.kick(late_only=True)  # not late yet: nothing is sent

        await asyncio.to_thread(guest)
        await asyncio.sleep(0.05)
        before_kick = list(ran)
        threading.Thread(target=poster.kick).start()
        await asyncio.sleep(0.05)
        after_kick = list(ran)
        poster.post(ran.append, (3,), hold=True)
        time.sleep(HOLD_S * 2)
        poster.post(ran.append, (4,), hold=True)  # the first has waited long enough: sent now
        await asyncio.sleep(0.05)
        return before_kick, after_kick, [*ran, -1, *wakeups]

    before_kick, after_kick, rest = arun(main())
    assert before_kick == []
    assert after_kick == [0, 1, 2]
    assert rest == [0, 1, 2, 3, 4, -1, 3, 2]  # two wake-ups: three calls, then two


def test_a_big_flushed_chunk_wakes_the_loop_at_once_and_a_small_one_waits_for_company() -> None:
    """The loop sends a big chunk while the guest makes the next (20 MB streams ~12 % faster by
    hand); small ones ride with the guest's head and body's end in one wake-up."""
    import threading
    from types import SimpleNamespace

    from wasm_runtime._streams import HOLD_BYTES, ChunkSink

    posts: list[bool] = []
    inv = SimpleNamespace(
        cond=threading.Condition(), post=lambda fn, hold=True: posts.append(hold), held=None
    )
    sink = ChunkSink(inv)  # type: ignore[arg-type]
    sink.push(b"x" * 16)
    sink.push(b"x" * HOLD_BYTES)
    sink.push(b"x" * (HOLD_BYTES - 1))
    assert posts == [True, False, True]


def test_a_guest_line_on_stdout_reaches_the_log_when_written_not_at_a_flush() -> None:
    """stdout and stderr keep nothing back: a line is the invocation's log line as soon as its
    newline is written (a partial one waits for the rest, or the invocation's end), and a write
    never has to wait for room."""
    from wasm_runtime import _wasi
    from wasm_runtime._context import current
    from wasm_runtime._streams import MAX_IO

    async def main() -> list[list[tuple[str, str]]]:
        def logged(stream: str, line: str) -> None:
            raise AssertionError("kept on the invocation, not posted")

        inv = invocation(log_fn=logged)
        inv.inline = True  # its posts are kept on it, in order, as on the event loop's thread
        current.inv = inv
        seen = []
        try:
            out = _wasi._stdout()
            assert out.check_write() == Ok(min(1 << 20, MAX_IO))
            assert out.write(b"one\ntw") == Ok(None)
            seen.append([args for _, args in inv.kept])
            assert out.write(b"o\nthr") == Ok(None) and out.blocking_flush() == Ok(None)
            seen.append([args for _, args in inv.kept])
            for cleanup in inv.cleanups:
                cleanup()
            seen.append([args for _, args in inv.kept])
        finally:
            current.inv = None
        return seen

    first, second, last = arun(main())
    assert first == [("stdout", "one")]
    assert second == [("stdout", "one"), ("stdout", "two")]
    assert last == [("stdout", "one"), ("stdout", "two"), ("stdout", "thr")]
