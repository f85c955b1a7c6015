"""Host functions defined through `_crossing` (C) answer the guest exactly as stock wasmtime-py does.

The fastcall guest calls one host function of every shape (bytes, strings, lists, options,
results, variants, records, resources borrowed, owned and dropped). Here the host side is
written in edgefn's canonical values and linked the way the runtime links a function
(`_linker._define`); its answers must equal, byte for byte, those of `harness.Host` on stock
wasmtime-py, recorded in a child process by the `baseline` fixture.
"""

from __future__ import annotations

import gc
import weakref
from typing import Any

import pytest
from wasmtime import Config, Engine, Store, WasmtimeError
from wasmtime.component import U32, Component, Linker, Variant

from tests.wasm_fastcall import harness, scenarios
from wasm_runtime import _crossing, _hostcall, _linker


@pytest.fixture
def store_table() -> _hostcall.ResourceTable:
    """The guest store's resource table (the runtime makes one for each Store it instantiates)."""
    return _hostcall.ResourceTable()


@pytest.fixture
def host() -> harness.CanonicalHost:
    return harness.CanonicalHost()


@pytest.fixture
def guest(engine: Engine, component: Component, host: harness.CanonicalHost, store_table: _hostcall.ResourceTable) -> harness.Guest:
    return harness.Guest(engine, harness.crossing_linker(engine, component, host.impls()), component, store_table)


def test_every_scenario_answers_as_on_stock_wasmtime(
    baseline: dict[str, Any], guest: harness.Guest, store_table: _hostcall.ResourceTable
) -> None:
    calls = _hostcall.stats()["calls"]
    for op, size in scenarios.matrix():
        key = f"{op}/{size}"
        assert guest.run(op, harness.pattern(size), size) == baseline["answers"][key], key
    assert _hostcall.stats()["calls"] > calls  # the C crossing served them, not wasmtime-py
    assert len(store_table) == 0  # every blob the guest made was dropped or consumed


def test_the_host_receives_canonical_values(guest: harness.Guest, host: harness.CanonicalHost) -> None:
    guest.run("reshape", harness.pattern(7), 7)
    guest.run("retag", harness.pattern(7), 7)
    guest.run("pair", harness.pattern(7), 7)
    guest.run("maybe", b"", 0)
    guest.run("consume", harness.pattern(7), 7)
    seen = dict(host.received)
    assert isinstance(seen["reshape"], Variant) and seen["reshape"].tag in {"empty", "raw", "text", "num"}
    assert isinstance(seen["retag"], Variant) and type(seen["retag"].payload) is bytes
    assert set(seen["pair"]) == {"name", "body"} and type(seen["pair"]["body"]) is bytes
    assert isinstance(seen["consume"], harness.Blob)


def test_resources_are_dropped_through_their_host_object(
    guest: harness.Guest, host: harness.CanonicalHost, store_table: _hostcall.ResourceTable
) -> None:
    drops = _hostcall.stats()["drops"]
    guest.run("blob", harness.pattern(64), 64)
    assert host.blobs and all(b.dropped for b in host.blobs)
    assert len(store_table) == 0
    assert _hostcall.stats()["drops"] > drops


def test_export_round_trips_are_unchanged(baseline: dict[str, Any], guest: harness.Guest) -> None:
    for size, expected in baseline["identity"].items():
        assert guest.call("identity", harness.pattern(size)) == expected


def _probe(
    engine: Engine, ty: str, impl: Any, on_error: Any = None, epoch_deadline: int | None = None
) -> tuple[Store, Any, _crossing.ExportPlan]:
    component = Component(engine, harness.wat_probe(ty))
    _crossing.install()
    linker = Linker(engine)
    (name, item), = component.type.imports(engine).items()
    fty = item.ty.exports(engine)["f"].ty
    with linker.root() as root, root.add_instance(name) as inst:
        _crossing.add_func(inst, "f", impl, _crossing.signature(fty), on_error or _linker._on_error(f"{name}#f"))
    store = Store(engine)
    if epoch_deadline is not None:
        store.set_epoch_deadline(epoch_deadline)
    _crossing.bind_table(store, _hostcall.ResourceTable())
    index = component.get_export_index("call")
    assert index is not None
    func = linker.instantiate(store, component).get_func(store, index)
    return store, func, _crossing.export_plan(index, func.type(store))


@pytest.mark.parametrize(
    ("ty", "returned", "expected"),
    [("u32", 2**32 + 5, 5), ("u32", -1, 2**32 - 1), ("s32", 2**31, -(2**31)), ("u64", -2, 2**64 - 2),
     ("f64", 1, 1.0)],
)
def test_scalar_results_wrap_as_ctypes_assigns_them(engine: Engine, ty: str, returned: Any, expected: Any) -> None:
    store, func, _plan = _probe(engine, ty, lambda a: returned)
    assert func(store, 0.0 if ty == "f64" else 0) == expected


def test_an_exception_in_a_host_function_traps_with_its_name(engine: Engine) -> None:
    messages: list[BaseException] = []

    def on_error(exc: BaseException) -> str:
        messages.append(exc)
        return f"probe failed: {exc}"

    def boom(a: int) -> int:
        raise ValueError(f"no {a}")

    store, func, _plan = _probe(engine, "u32", boom, on_error)
    with pytest.raises(WasmtimeError, match="probe failed: no 7"):
        func(store, 7)
    assert isinstance(messages[0], ValueError) and messages[0].__traceback__ is not None


def test_a_result_that_does_not_fit_the_type_traps(engine: Engine) -> None:
    store, func, _plan = _probe(engine, "u32", lambda a: "seven")
    with pytest.raises(WasmtimeError, match="TypeError: expected int, got str"):
        func(store, 7)


def test_a_mismatched_value_layout_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _crossing.layout_problem() is None
    wrong = dict(_hostcall.layout(), **{"offsetof(val.of)": 16})
    monkeypatch.setattr(_hostcall, "layout", lambda: wrong)
    assert _crossing.layout_problem() == "offsetof(val.of) is 16 in _hostcall.c, 8 in wasmtime-py"


def test_a_mismatched_value_kind_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_crossing, "_KIND", dict(_hostcall.KINDS, RESOURCE=22))
    assert _crossing.layout_problem() == "value kind RESOURCE is 22 in _hostcall.c, 21 in wasmtime-py"


def test_an_export_called_in_c_answers_as_wasmtime_py_does(engine: Engine) -> None:
    store, func, plan = _probe(engine, "u32", lambda a: a * 3)
    export = _crossing.export(store, func, plan)
    assert [export(n) for n in (0, 5, 2**31)] == [func(store, n) for n in (0, 5, 2**31)] == [0, 15, 2**31 * 3 % 2**32]
    with pytest.raises(TypeError, match="takes 1 arguments, not 2"):
        export(1, 2)
    with pytest.raises(TypeError, match="expected int"):
        export("seven")
    assert export(7) == 21  # a refused call leaves the instance as it was


def test_a_trap_in_an_export_called_in_c_is_a_wasmtime_error(engine: Engine) -> None:
    def boom(a: int) -> int:
        raise ValueError(f"no {a}")

    store, func, plan = _probe(engine, "u32", boom, lambda exc: f"probe failed: {exc}")
    export = _crossing.export(store, func, plan)
    with pytest.raises(WasmtimeError, match="probe failed: no 7"):
        export(7)


def test_an_exports_epoch_deadline_is_set_without_wasmtime_py() -> None:
    """What the runtime sets before each run on a reused instance (one ctypes call less a request)."""
    config = Config()
    config.epoch_interruption = True
    engine = Engine(config)
    store, func, plan = _probe(engine, "u32", lambda a: a + 1, epoch_deadline=1)
    export = _crossing.export(store, func, plan)
    for _ in range(3):
        engine.increment_epoch()  # past the deadline set at instantiation
    export.set_epoch_deadline(2)  # counted from the epoch now
    assert export(1) == 2
    engine.increment_epoch()
    assert export(2) == 3  # one tick of two gone
    engine.increment_epoch()
    with pytest.raises(WasmtimeError, match="wasm trap: interrupt"):
        export(3)
    with pytest.raises(OverflowError):
        export.set_epoch_deadline(-1)


def test_a_host_function_named_by_method_calls_it_on_its_first_argument(engine: Engine) -> None:
    store, func, _plan = _probe(engine, "u32", "bit_length")
    assert func(store, 7) == 3 and func(store, 2**20) == 21
    store, func, _plan = _probe(engine, "u32", "no_such_method", lambda exc: f"{type(exc).__name__}: {exc}")
    with pytest.raises(WasmtimeError, match="AttributeError: 'int' object has no attribute 'no_such_method'"):
        func(store, 7)


def test_a_function_whose_plans_failed_half_way_cannot_be_filled_again() -> None:
    """A host function's plans are made once: one whose second plan was refused keeps the first
    (freed with it), and a second `__init__` is refused rather than overwriting, and leaking, it."""
    _crossing.install()
    u32 = _crossing.plan_of(U32())
    with pytest.raises(TypeError, match="plan: expected a tuple"):
        _hostcall.HostFunc(len, (u32, "bogus"), None, str)
    func = _hostcall.HostFunc.__new__(_hostcall.HostFunc)
    with pytest.raises(TypeError, match="plan: expected a tuple"):
        func.__init__(len, (u32, "bogus"), None, str)
    with pytest.raises(TypeError, match="made once"):
        func.__init__(len, (u32,), None, str)


def test_a_resource_table_hands_out_handles_and_refuses_unknown_ones() -> None:
    table = _hostcall.ResourceTable()
    a, b = object(), object()
    ra, rb = table.add(a), table.add(b)
    assert (ra, rb) == (1, 2) and len(table) == 2
    assert table.get(ra) is a and table.pop(rb) is b and table.pop(rb) is None
    assert len(table) == 1
    with pytest.raises(WasmtimeError, match="unknown resource handle 2"):
        table.get(rb)
    with pytest.raises(OverflowError):
        table.get(2**40)


def test_a_cycle_through_a_resource_table_is_collected() -> None:
    class Holder:  # a host object that leads back to its table, as one reaching its store would
        table: Any = None

    table, holder = _hostcall.ResourceTable(), Holder()
    holder.table = table
    table.add(holder)
    gone = weakref.ref(holder)
    del table, holder
    gc.collect()
    assert gone() is None
