"""The fast paths answer exactly what stock wasmtime-py answers, for every shape with bytes inside."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from wasmtime import Engine, WasmtimeError
from wasmtime.component import Component

from tests.wasm_fastcall import harness, scenarios
from wasm_runtime import _fastcall

MIB = 1 << 20


@pytest.fixture(scope="module")
def fast_results(fast: None) -> dict[str, Any]:
    return scenarios.run_matrix()


def test_every_scenario_matches_stock_wasmtime_byte_for_byte(
    baseline: dict[str, Any], fast_results: dict[str, Any]
) -> None:
    assert fast_results["answers"].keys() == baseline["answers"].keys()
    for key, expected in baseline["answers"].items():
        got = fast_results["answers"][key]
        assert type(got) is bytes, key
        assert got == expected, f"{key}: {len(got)} bytes vs {len(expected)} on the stock path"


def test_host_receives_what_stock_wasmtime_delivers(
    baseline: dict[str, Any], fast_results: dict[str, Any]
) -> None:
    assert len(fast_results["received"]) == len(baseline["received"])
    for got, expected in zip(fast_results["received"], baseline["received"], strict=True):
        assert got == expected
        assert [type(v) for v in _flatten(got)] == [type(v) for v in _flatten(expected)]


def test_export_round_trips_match(baseline: dict[str, Any], fast_results: dict[str, Any]) -> None:
    assert fast_results["identity"] == baseline["identity"]
    assert fast_results["blobs_left"] == baseline["blobs_left"] == {}


def test_answers_are_the_expected_bytes(fast_results: dict[str, Any]) -> None:
    """Pins a few answers outright, so both paths being equally wrong would still fail."""
    answers = fast_results["answers"]
    assert answers["echo/4096"] == harness.pattern(4096)
    assert answers[f"echo/{MIB}"] == harness.pattern(MIB)
    assert answers["source/7"] == harness.pattern(7)
    assert answers["sink/4096"] == (4096).to_bytes(4, "little")
    assert answers["try-fail/7"] == b"\x03\x00\x00\x00err\x0e\x00\x00\x00failed after 7"
    assert answers["maybe/0"] == b"\x00\x00\x00\x00\x04\x00\x00\x00none"
    assert answers["consume/7"] == harness.pattern(7) + b"+"
    assert fast_results["identity"][MIB] == harness.pattern(MIB)


# wasmtime 49 charges 48 bytes of "hostcall fuel" (128 MiB per call) per list element on the
# dynamic Val path, so one list<u8> crossing holds at most this many bytes, stock path or not;
# larger bodies must cross in chunks (wasi streams do). 8 MiB in one call is not possible.
MAX_CROSSING = _fastcall.MAX_LIST_BYTES


@pytest.mark.parametrize("op", ["echo", "source", "maybe", "blob"])
def test_the_largest_crossing_wasmtime_allows_arrives_intact(
    fast: None, engine: Engine, component: Component, op: str
) -> None:
    # The stock path would take ~10 s per direction here, so the expected answer is computed
    # rather than recorded from it; sizes up to 1 MiB are compared with the stock path above.
    # The guest frames its answer, so ops that return more than they got leave room for it.
    size = {"blob": MAX_CROSSING // 2 - 16, "maybe": MAX_CROSSING - 16}.get(op, MAX_CROSSING)
    data = harness.pattern(size)
    host = harness.Host()
    host.record_calls = False
    guest = harness.Guest(engine, harness.make_linker(engine, host), component)
    got = guest.run(op, data if op != "source" else b"", size)
    expected = {
        "echo": data,
        "source": data,
        "maybe": size.to_bytes(4, "little") + data[::-1] + b"\x04\x00\x00\x00none",
        "blob": (4).to_bytes(4, "little") + 2 * (2 * size).to_bytes(4, "little") + data + data,
    }[op]
    assert len(got) == len(expected)
    assert got == expected


@pytest.mark.parametrize("op", ["sink", "source"])
def test_one_byte_over_the_limit_is_wasmtimes_error_not_a_crash(
    fast: None, engine: Engine, component: Component, op: str
) -> None:
    assert MAX_CROSSING == 2_796_202
    host = harness.Host()
    host.record_calls = False
    guest = harness.Guest(engine, harness.make_linker(engine, host), component)
    data = harness.pattern(MAX_CROSSING + 1) if op == "sink" else b""
    with pytest.raises(WasmtimeError, match="fuel allocated for hostcalls has been exhausted"):
        guest.run(op, data, MAX_CROSSING + 1)
    # The trapped instance is poisoned, as after any trap; the linker and its plans are not.
    fresh = harness.Guest(engine, harness.make_linker(engine, host), component)
    assert fresh.run("echo", b"still usable?") == b"still usable?"


def test_non_byte_lists_keep_the_generic_path(fast: None, engine: Engine, component: Component) -> None:
    host = harness.Host()
    guest = harness.Guest(engine, harness.make_linker(engine, host), component)
    data = bytes(range(10))
    words = guest.run("words", data)
    assert words == b"".join(((b * 16777619 % 2**32) ^ 0xDEADBEEF).to_bytes(4, "little") for b in data)
    strings = guest.run("strings", data)
    assert strings == b"\x0a\x00\x00\x000506070809\x0a\x00\x00\x000001020304"
    (_, items), (_, texts) = host.received
    assert isinstance(items, list) and all(type(i) is int for i in items)
    assert texts == ["0001020304", "0506070809"]


def test_concurrent_stores_share_plans_safely(fast: None, engine: Engine, component: Component) -> None:
    host = harness.Host()
    host.record_calls = False
    linker = harness.make_linker(engine, host)
    errors: list[BaseException] = []

    def worker(seed: int) -> None:
        try:
            guest = harness.Guest(engine, linker, component)
            for i in range(20):
                data = harness.pattern(1000 + seed * 37 + i)
                assert guest.run("echo", data) == data
                assert guest.run("add", b"", i) == (i + 7).to_bytes(4, "little")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors


def test_host_errors_surface_as_on_the_stock_path(fast: None, engine: Engine, component: Component) -> None:
    host = harness.Host()
    host.echo = lambda store, data: "not bytes"  # type: ignore[assignment,method-assign]
    guest = harness.Guest(engine, harness.make_linker(engine, host), component)
    with pytest.raises(TypeError, match="expected bytes value"):
        guest.run("echo", b"abc")
    host.maybe = lambda store, data: 42  # type: ignore[assignment,method-assign]
    guest = harness.Guest(engine, harness.make_linker(engine, host), component)
    with pytest.raises(ValueError, match="value not valid for this variant"):
        guest.run("maybe", b"abc")


def _flatten(value: Any) -> list[Any]:
    if isinstance(value, (list, tuple)):
        return [x for v in value for x in _flatten(v)]
    return [value]
