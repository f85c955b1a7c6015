"""Guests are compiled inside the byte adapter (wasm_runtime._body_adapter): request and response
bodies cross as latin-1 strings, exact both ways and the same as through plain `list<u8>`, with
stream errors and their handles intact; a component it cannot take apart is compiled as it is."""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from wasmtime import Engine, wat2wasm

from wasm_runtime import Limits, OutboundPolicy, OutboundRequest, OutboundResponse, OutboundTimeouts
from wasm_runtime import _body_adapter as adapter
from wasm_runtime._streams import MAX_IO

from .conftest import arun
from .helpers import chunks, drain, pattern, request, runtime

SIZES = [0, 1, 255, 256, 65_535, 65_537, 3 << 20]


def echo_bodies(hello: Path, data_dir: Path) -> tuple[list[str], int, list[dict]]:
    """hello's echo of each size of body, sent in uneven chunks; the imports it was compiled with
    and the most bytes one of its stream calls may move."""

    async def main() -> tuple[list[str], int, list[dict]]:
        async with runtime(data_dir) as rt:
            comp = await rt.load(hello)
            echoes = []
            for n in SIZES:
                body = pattern(n, start=n % 256)
                parts = [body[i : i + 70_001] for i in range(0, len(body), 70_001)]
                resp = await rt.invoke(comp, request("/", "POST", body=chunks(*parts)), limits=Limits())
                echoes.append(json.loads(await drain(resp)))
            return list(comp.component.type.imports(rt.engine)), comp.io_max, echoes

    result: tuple[list[str], int, list[dict]] = arun(main())
    return result


def test_request_bodies_cross_the_adapter_exactly(components: dict[str, Path], data_dir: Path) -> None:
    imports, io_max, echoes = echo_bodies(components["hello"], data_dir)
    assert adapter.INTERFACE in imports and io_max == adapter.IO_MAX
    for n, echo in zip(SIZES, echoes, strict=True):
        body = pattern(n, start=n % 256)
        assert (echo["body_len"], echo["body_sha256"]) == (n, hashlib.sha256(body).hexdigest())


def test_without_the_adapter_bodies_cross_as_lists_with_the_same_answers(
    components: dict[str, Path], data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    imports, _, adapted = echo_bodies(components["hello"], data_dir)
    monkeypatch.setenv("EDGEFN_NO_BODY_ADAPTER", "1")
    plain_imports, io_max, plain = echo_bodies(components["hello"], data_dir)
    assert adapter.INTERFACE in imports and adapter.INTERFACE not in plain_imports
    assert io_max == MAX_IO  # a list<u8> crossing is kept small
    assert [e["body_sha256"] for e in plain] == [e["body_sha256"] for e in adapted]


def test_response_bodies_of_every_size_are_exact(components: dict[str, Path], data_dir: Path) -> None:
    async def main() -> list[bytes]:
        async with runtime(data_dir) as rt:
            comp = await rt.load(components["stream"])
            bodies = []
            for n in SIZES:
                resp = await rt.invoke(comp, request(f"/?n=2&ms=0&size={n}"), limits=Limits(timeout_s=60))
                bodies.append(await drain(resp))
            return bodies

    for n, body in zip(SIZES, arun(main()), strict=True):
        assert len(body) == 2 * n
        assert body == pattern(2 * n)


class EchoTransport:
    """An origin that answers every request with its own body, and keeps what it was sent."""

    def __init__(self) -> None:
        self.received: list[bytes] = []

    async def send(self, request: OutboundRequest, timeouts: OutboundTimeouts) -> OutboundResponse:
        got = b"".join([chunk async for chunk in request.body]) if request.body is not None else b""
        self.received.append(got)
        return OutboundResponse(200, [], chunks(got[: len(got) // 2], got[len(got) // 2 :]))

    async def aclose(self) -> None:
        return None


def test_arbitrary_bytes_cross_both_ways_exactly(components: dict[str, Path], data_dir: Path) -> None:
    """Random bytes (ASCII and high bytes mixed at every offset, runs of each, lengths that end
    mid-word), each way as latin-1 text, which the crossing turns into bytes a word at a time
    where it can: into hello (which hashes what it read), and through `fetch` to an origin that
    keeps what it got (into the guest and out again) and echoes it (twice more)."""
    rng = random.Random(6)
    bodies = [rng.randbytes(n) for n in (1, 7, 8, 9, 15, 16, 17, 4093, 70_003)]
    bodies += [b"\x80" * 9 + b"a" * 17 + bytes(range(256)) * 3 + b"\xff", b"ascii only, 16 b"]
    bodies.append(bytes(rng.choice((rng.randrange(128), 128 + rng.randrange(128))) for _ in range(300_001)))
    origin = EchoTransport()
    policy = OutboundPolicy(allowed=("web",), origins=frozenset({"web"}))

    def sent(body: bytes) -> AsyncIterator[bytes]:
        return chunks(*[body[i : i + 65_537] for i in range(0, len(body), 65_537)])

    async def main() -> tuple[list[str], list[bytes]]:
        async with runtime(data_dir, transport=origin) as rt:
            hello, fetch = await rt.load(components["hello"]), await rt.load(components["fetch"])
            hashes, echoes = [], []
            for body in bodies:
                resp = await rt.invoke(hello, request("/", "POST", body=sent(body)), limits=Limits())
                hashes.append(json.loads(await drain(resp))["body_sha256"])
                resp = await rt.invoke(
                    fetch, request("/echo", "POST", body=sent(body)), limits=Limits(), outbound=policy
                )
                echoes.append(await drain(resp))
            return hashes, echoes

    hashes, echoes = arun(main())
    assert hashes == [hashlib.sha256(body).hexdigest() for body in bodies]
    assert origin.received == bodies
    assert echoes == [b"fetched: " + body for body in bodies]


def test_a_failed_body_read_reaches_the_guest_with_its_error_resource(
    components: dict[str, Path], data_dir: Path
) -> None:
    """The host's `last-operation-failed` carries an `own<error>` back through the adapter; hello
    asks it for its debug string, and the instance serves the next request."""

    async def failing() -> AsyncIterator[bytes]:
        yield b"first part"
        raise ConnectionResetError("the client went away mid-body")

    async def main() -> tuple[dict, dict]:
        async with runtime(data_dir) as rt:
            comp = await rt.load(components["hello"])
            resp = await rt.invoke(comp, request("/", "POST", body=failing()), limits=Limits())
            failed = json.loads(await drain(resp))
            resp = await rt.invoke(comp, request("/", "POST", body=chunks(b"after")), limits=Limits())
            return failed, json.loads(await drain(resp))

    failed, after = arun(main())
    assert failed["body"] == "first part"
    assert "the client went away mid-body" in failed["body_error"]
    assert (after["body"], after["body_error"]) == ("after", None)


def test_a_component_that_does_not_import_streams_is_compiled_as_it_is() -> None:
    engine = Engine()
    wat = """(component
      (import "wasi:cli/environment@0.2.0" (instance
        (export "get-arguments" (func (result (list string))))))
      (core module $m))"""
    with pytest.raises(adapter.Unadaptable, match="does not import wasi:io/streams"):
        adapter.wrap(engine, wat2wasm(wat))
    assert adapter.compile_adapted(engine, wat2wasm(wat), "env-only") is None


def test_imports_after_the_first_definition_are_not_taken_apart() -> None:
    wat = """(component
      (import "a" (instance))
      (core module $m)
      (import "b" (instance)))"""
    with pytest.raises(adapter.Unadaptable, match="imports after"):
        adapter.read_layout(wat2wasm(wat))


def test_a_guest_of_another_toolchain_is_adapted_and_streams(data_dir: Path) -> None:
    """bench/guests/light: WAT made into a component by wasm-tools, importing only
    blocking-write-and-flush of wasi:io/streams@0.2.0 (componentize-py's guests import it all at
    0.2.9). Two of its 16-byte chunks a second apart, exact, and the guest ends when the body is
    closed."""
    from bench.light_guest import build

    async def main() -> tuple[list[str], bytes]:
        async with runtime(data_dir) as rt:
            comp = await rt.load(build())
            resp = await rt.invoke(comp, request("/"), limits=Limits(timeout_s=30))
            got = b""
            body = resp.body
            async for chunk in body:
                got += chunk
                if len(got) >= 32:
                    break
            await body.aclose()  # type: ignore[attr-defined]
            return list(comp.component.type.imports(rt.engine)), got

    imports, got = arun(main())
    assert adapter.INTERFACE in imports and "wasi:io/streams@0.2.0" in imports
    assert got[:32] == pattern(32)


def test_a_component_that_lies_about_its_sizes_is_refused_quickly() -> None:
    """A type section claiming four billion types in a few bytes is refused, not counted."""
    from wasm_runtime._component_binary import PREAMBLE, TYPE, section, uleb

    lying = PREAMBLE + section(TYPE, uleb(4_000_000_000) + b"\x73") + section(4, b"")
    with pytest.raises(adapter.Unadaptable, match="claims 4000000000 types"):
        adapter.read_layout(lying)
