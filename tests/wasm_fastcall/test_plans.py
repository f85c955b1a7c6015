"""Plan cache keys: one host function, several component types; slots reused after a linker dies."""

from __future__ import annotations

import gc

import pytest
from wasmtime import Engine, Store
from wasmtime.component import Component, Linker

from tests.wasm_fastcall import harness
from wasm_runtime import _fastcall


def _probe_linker(engine: Engine, calls: list[object]) -> Linker:
    def f(store: object, a: object) -> object:
        calls.append(a)
        return a + 1  # type: ignore[operator]

    linker = Linker(engine)
    with linker.root() as root, root.add_instance("edgefn:fastcall/probe") as inst:
        inst.add_func("f", f)
    return linker


def _call(engine: Engine, linker: Linker, component: Component, value: object) -> object:
    store = Store(engine)
    func = linker.instantiate(store, component).get_func(store, "call")
    assert func is not None
    result = func(store, value)
    func.post_return(store)
    return result


def test_one_host_function_serves_components_that_import_it_with_different_types(fast: None) -> None:
    engine = Engine()
    by_type = {ty: Component(engine, harness.wat_probe(ty)) for ty in ("u32", "u64", "f64", "s32")}
    calls: list[object] = []
    linker = _probe_linker(engine, calls)
    built = _fastcall.stats()["host_plans_built"]
    # Interleaved, so a plan keyed by the host function alone would convert with the wrong type.
    for _ in range(2):
        assert _call(engine, linker, by_type["u32"], 41) == 42
        assert _call(engine, linker, by_type["u64"], 2**40) == 2**40 + 1
        assert _call(engine, linker, by_type["f64"], 1.5) == 2.5
        assert _call(engine, linker, by_type["s32"], -5) == -4
    assert calls == [41, 2**40, 1.5, -5] * 2
    assert _fastcall.stats()["host_plans_built"] == built + 4


def test_a_second_copy_of_a_component_gets_its_own_plan(fast: None) -> None:
    engine = Engine()
    first = Component(engine, harness.wat_probe("u32"))
    second = Component(engine, harness.wat_probe("u32"))
    linker = _probe_linker(engine, [])
    built = _fastcall.stats()["host_plans_built"]
    assert _call(engine, linker, first, 1) == 2
    assert _call(engine, linker, first, 2) == 3
    assert _call(engine, linker, second, 3) == 4
    assert _fastcall.stats()["host_plans_built"] == built + 2


def test_plans_die_with_their_linker_and_reused_slots_start_afresh(fast: None) -> None:
    gc.collect()  # linkers left by earlier tests must not die inside the count below
    engine = Engine()
    u32 = Component(engine, harness.wat_probe("u32"))
    f64 = Component(engine, harness.wat_probe("f64"))
    linker = _probe_linker(engine, [])
    assert _call(engine, linker, u32, 1) == 2
    plans = _fastcall.stats()["host_plans"]
    del linker
    gc.collect()
    assert _fastcall.stats()["host_plans"] == plans - 1
    # The freed function slot is handed to the next add_func; its plans must not leak into it.
    linker = _probe_linker(engine, [])
    assert _call(engine, linker, f64, 0.25) == 1.25
    assert _call(engine, linker, u32, 7) == 8


def test_wasm_loop_guest_calls_the_host(fast: None) -> None:
    engine = Engine()
    component = Component(engine, harness.WAT_LOOPS)
    host = harness.Host()
    guest = harness.Guest(engine, harness.make_linker_for(engine, host, component), component)
    assert guest.call("loop-noop", 10) is None
    assert guest.call("loop-add", 100) == sum(range(101))


_SCALAR_CASES = {
    "u32": [0, 5, 2**32 - 1, 2**32 + 5, -1, True, 2**64 + 3],
    "s32": [0, -4, 2**31 - 1, 2**31, -(2**31) - 1, False],
    "u64": [0, 2**64 - 1, 2**64 + 9, -2],
    "f64": [0.0, -1.5, 1e300, float("inf")],
}
_SCALAR_SCRIPT = """
import json, sys
from wasmtime import Engine, Store
from wasmtime.component import Component, Linker
from tests.wasm_fastcall import harness
cases = json.loads(sys.argv[1])
out = {}
for ty, values in cases.items():
    engine = Engine()
    component = Component(engine, harness.wat_probe(ty))
    linker = Linker(engine)
    seen = []
    with linker.root() as root, root.add_instance("edgefn:fastcall/probe") as inst:
        inst.add_func("f", lambda store, a: (seen.append(a), a)[1])
    answers = []
    for v in values:
        store = Store(engine)
        func = linker.instantiate(store, component).get_func(store, "call")
        try:
            answers.append(repr(func(store, v)))
        except Exception as exc:
            answers.append(type(exc).__name__ + ": " + str(exc).splitlines()[0])
    out[ty] = {"answers": answers, "seen": [repr(s) for s in seen]}
print(json.dumps(out))
"""


def test_scalar_arguments_and_results_wrap_and_fail_as_on_the_stock_path(fast: None) -> None:
    import json
    import subprocess
    import sys

    cases = json.dumps(_SCALAR_CASES)
    stock = subprocess.run(
        [sys.executable, "-c", _SCALAR_SCRIPT, cases],
        cwd=harness.REPO, capture_output=True, text=True, check=True, timeout=60,
    )
    ours = subprocess.run(
        [sys.executable, "-c", "from wasm_runtime import _fastcall; _fastcall.install()\n" + _SCALAR_SCRIPT, cases],
        cwd=harness.REPO, capture_output=True, text=True, check=True, timeout=60,
    )
    assert json.loads(ours.stdout) == json.loads(stock.stdout)
    assert json.loads(ours.stdout)["u32"]["answers"][3] == "5"  # 2**32 + 5 wraps, on both paths


def test_a_wrongly_typed_scalar_result_is_the_stock_type_error(fast: None) -> None:
    engine = Engine()
    component = Component(engine, harness.wat_probe("u32"))
    linker = Linker(engine)
    with linker.root() as root, root.add_instance("edgefn:fastcall/probe") as inst:
        inst.add_func("f", lambda store, a: 1.5)
    with pytest.raises(TypeError, match="expected int for U32 type"):
        _call(engine, linker, component, 1)


def test_components_dropped_and_recompiled_never_inherit_a_stale_plan(fast: None) -> None:
    # A plan is keyed by the address of its component's type tables; the plan pins them, so a
    # recompiled component can only land on an address whose plan is gone. Alternating types
    # make a stale hit fail the kind check.
    engine = Engine()
    linker = _probe_linker(engine, [])
    for i in range(3 * _fastcall._MAX_PLANS_PER_FUNC):
        ty, value, expected = ("u32", 41, 42) if i % 2 else ("f64", 0.5, 1.5)
        component = Component(engine, harness.wat_probe(ty))
        assert _call(engine, linker, component, value) == expected
        del component
        gc.collect()
    keys = _fastcall._plan_keys_by_func
    assert max(len(v) for v in keys.values()) <= _fastcall._MAX_PLANS_PER_FUNC
