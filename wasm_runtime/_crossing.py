"""Host functions and resources defined through `_hostcall`, the crossing written in C.

wasmtime-py calls a host function through a ctypes callback and wraps each argument and result
in its own objects, which `_canon`'s converters then turn into the host's canonical values:
about 30 us of Python for each of the 34-48 host calls a hello request makes, more than the host
functions themselves take. `_hostcall` (wasm_runtime/_hostcall.c) reads and writes component
values straight from and into canonical values, following a plan made here once per imported
function type when the linker is built. It also keeps each Store's resource table (bound to the
store, so a host call finds it without Python) and calls a guest's exports (`export`).

`_hostcall.c` declares wasmtime 49's value layout by hand (the wheel ships no C headers), so
`install()` compares it with wasmtime-py's ctypes declarations, which are generated from the real
headers, and refuses a mismatch before any host function is defined.
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from wasmtime import Store, WasmtimeError
from wasmtime import _ffi as ffi
from wasmtime.component import (
    BorrowType,
    EnumType,
    ExportIndex,
    FlagsType,
    Func,
    FuncType,
    LinkerInstance,
    ListType,
    OptionType,
    OwnType,
    RecordType,
    ResourceType,
    ResultType,
    TupleType,
    ValType,
    Variant,
    VariantType,
    _types,
)

from . import _hostcall
from ._canon import Err, HostResource, Ok
from ._hostcall import ResourceTable

Plan = tuple[Any, ...]
Signature = tuple[tuple[Plan, ...], "Plan | None"]  # a function's parameter plans and result plan

# Plan kinds, as _hostcall.c numbers them: wasmtime's value kinds (upper case, checked against
# wasmtime-py's by `layout_problem`), then what a resource handle, a list<u8> or latin-1 text
# means to the host (lower case).
_KIND = _hostcall.KINDS
_SCALAR_KINDS: dict[type, int] = {
    _types.Bool: _KIND["BOOL"], _types.S8: _KIND["S8"], _types.U8: _KIND["U8"], _types.S16: _KIND["S16"],
    _types.U16: _KIND["U16"], _types.S32: _KIND["S32"], _types.U32: _KIND["U32"], _types.S64: _KIND["S64"],
    _types.U64: _KIND["U64"], _types.F32: _KIND["F32"], _types.F64: _KIND["F64"], _types.Char: _KIND["CHAR"],
    _types.String: _KIND["STRING"],
}
K_LIST, K_RECORD, K_TUPLE, K_VARIANT = _KIND["LIST"], _KIND["RECORD"], _KIND["TUPLE"], _KIND["VARIANT"]
K_ENUM, K_OPTION, K_RESULT, K_FLAGS = _KIND["ENUM"], _KIND["OPTION"], _KIND["RESULT"], _KIND["FLAGS"]
P_OWN, P_BORROW, P_BYTES, P_LATIN1 = _KIND["own"], _KIND["borrow"], _KIND["bytes"], _KIND["latin1"]

_lock = threading.Lock()
_installed = False


def plan_of(ty: ValType, latin1: bool = False) -> Plan:
    """The plan `_hostcall` follows for values of `ty` (see `plan_new` in _hostcall.c). With
    `latin1`, a `string` is bytes to the host: its code points, each below 256 (the body
    adapter's text); a string outside that range traps."""
    if latin1 and isinstance(ty, _types.String):
        return (P_LATIN1,)
    kind = _SCALAR_KINDS.get(type(ty))
    if kind is not None:
        return (kind,)
    if isinstance(ty, OwnType):
        return (P_OWN,)
    if isinstance(ty, BorrowType):
        return (P_BORROW,)
    if isinstance(ty, ListType):
        element = ty.element
        return (P_BYTES,) if isinstance(element, _types.U8) else (K_LIST, plan_of(element, latin1))
    if isinstance(ty, OptionType):
        return (K_OPTION, plan_of(ty.payload, latin1))
    if isinstance(ty, ResultType):
        ok, err = ty.ok, ty.err
        return (
            K_RESULT,
            None if ok is None else plan_of(ok, latin1),
            None if err is None else plan_of(err, latin1),
        )
    if isinstance(ty, TupleType):
        return (K_TUPLE, tuple(plan_of(e, latin1) for e in ty.elements))
    if isinstance(ty, RecordType):
        return (K_RECORD, tuple((name, plan_of(f, latin1)) for name, f in ty.fields))
    if isinstance(ty, VariantType):
        cases = ty.cases
        return (K_VARIANT, tuple((name, None if c is None else plan_of(c, latin1)) for name, c in cases))
    if isinstance(ty, EnumType):
        return (K_ENUM, tuple(ty.names))
    if isinstance(ty, FlagsType):
        return (K_FLAGS, tuple(ty.names))
    raise TypeError(f"no host-call plan for {type(ty).__name__}")


def layout_problem() -> str | None:
    """Why `_hostcall.c`'s view of wasmtime's values differs from wasmtime-py's, or None."""
    expected = {
        "sizeof(val)": ctypes.sizeof(ffi.wasmtime_component_val_t),
        "offsetof(val.of)": ffi.wasmtime_component_val_t.of.offset,
        "sizeof(record_entry)": ctypes.sizeof(ffi.wasmtime_component_valrecord_entry_t),
        "offsetof(record_entry.val)": ffi.wasmtime_component_valrecord_entry_t.val.offset,
        "offsetof(variant.val)": ffi.wasmtime_component_valvariant_t.val.offset,  # type: ignore[attr-defined]
        "offsetof(result.val)": ffi.wasmtime_component_valresult_t.val.offset,  # type: ignore[attr-defined]
        "sizeof(name)": ctypes.sizeof(ffi.wasm_name_t),
        "sizeof(list)": ctypes.sizeof(ffi.wasmtime_component_vallist_t),
        "sizeof(flags)": ctypes.sizeof(ffi.wasmtime_component_valflags_t),
        "offsetof(list.data)": ffi.wasmtime_component_vallist_t.data.offset,  # type: ignore[attr-defined]
    }
    found = _hostcall.layout()
    for what, value in expected.items():
        if found.get(what) != value:
            return f"{what} is {found.get(what)} in _hostcall.c, {value} in wasmtime-py"
    for name, kind in _KIND.items():
        theirs = getattr(ffi, f"WASMTIME_COMPONENT_{name}").value if name.isupper() else kind
        if kind != theirs:
            return f"value kind {name} is {kind} in _hostcall.c, {theirs} in wasmtime-py"
    return None


_FUNCTIONS = (
    "wasmtime_error_new", "wasmtime_error_message", "wasmtime_error_delete", "wasm_byte_vec_new",
    "wasm_byte_vec_new_uninitialized",
    "wasm_byte_vec_delete", "wasmtime_component_vallist_new_uninit", "wasmtime_component_vallist_delete",
    "wasmtime_component_valtuple_new_uninit", "wasmtime_component_valtuple_delete",
    "wasmtime_component_valrecord_new_uninit", "wasmtime_component_valrecord_delete",
    "wasmtime_component_valflags_new_uninit", "wasmtime_component_val_new", "wasmtime_component_val_free",
    "wasmtime_component_resource_any_to_host", "wasmtime_component_resource_host_rep",
    "wasmtime_component_resource_host_new", "wasmtime_component_resource_host_delete",
    "wasmtime_component_resource_host_to_any", "wasmtime_component_linker_instance_add_func",
    "wasmtime_component_linker_instance_add_resource", "wasmtime_context_get_data",
    "wasmtime_context_set_data", "wasmtime_component_func_call", "wasmtime_component_func_post_return",
    "wasmtime_component_val_delete", "wasmtime_context_set_epoch_deadline",
)


def install() -> None:
    """Hands `_hostcall` the library's functions and the host's classes, once per process.

    Raises RuntimeError if the layouts differ: defining host functions would then corrupt memory."""
    global _installed
    with _lock:
        if _installed:
            return
        problem = layout_problem()
        if problem is not None:
            raise RuntimeError(f"wasm_runtime._hostcall does not match wasmtime-py's value layout: {problem}")
        addresses = {name: ctypes.cast(getattr(ffi.dll, name), ctypes.c_void_p).value for name in _FUNCTIONS}
        _hostcall.init(addresses, Ok, Err, Variant, HostResource.on_drop)
        _installed = True


def _address(obj: Any) -> int:
    return ctypes.cast(obj.ptr(), ctypes.c_void_p).value or 0


def _context_address(store: Store) -> int:
    return ctypes.cast(store._context(), ctypes.c_void_p).value or 0


def bind_table(store: Store, table: ResourceTable) -> None:
    """Host calls from `store` keep its resources in `table`. wasmtime holds only a pointer to
    it, so the Python Store keeps the table: it lives as long as the store can run."""
    install()
    store._edgefn_table = table  # type: ignore[attr-defined]
    _hostcall.bind_table(_context_address(store), table)


@dataclass(frozen=True)
class ExportPlan:
    """Where one export of a component is and the plans of its values: made once, when the
    component is loaded, for every instance of it."""

    index: ExportIndex
    params: tuple[Plan, ...]
    result: Plan | None


def export_plan(index: ExportIndex, fty: FuncType) -> ExportPlan:
    return ExportPlan(index, *signature(fty))


def signature(fty: FuncType, latin1: bool = False) -> Signature:
    """The plans of a function's parameters and of its result (None: it returns nothing)."""
    result = None if fty.result is None else plan_of(fty.result, latin1)
    return tuple(plan_of(ty, latin1) for _, ty in fty.params), result


def export(store: Store, func: Func, plan: ExportPlan) -> _hostcall.Export:
    """`func` (at `plan.index` of an instance in `store`, which is bound to a table), called as
    `export(*args)` with canonical values; it returns the canonical result, post-returned, or
    raises WasmtimeError as wasmtime-py would. For the calls made on every request: no ctypes,
    no type lookup per call."""
    install()
    return _hostcall.Export(bytes(func._func), _context_address(store), plan.params, plan.result, _error_from)


def _error_from(address: int) -> WasmtimeError:
    """The exception wasmtime-py raises for this `wasmtime_error_t`, which it takes over."""
    return WasmtimeError._from_ptr(ctypes.cast(address, ctypes.POINTER(ffi.wasmtime_error_t)))


def add_func(
    inst: LinkerInstance,
    name: str,
    impl: Callable[..., Any] | str,
    sig: Signature,
    on_error: Callable[[BaseException], str],
) -> _hostcall.HostFunc:
    """Defines `name` in `inst` as `impl`, called with canonical values (a str: that method of
    the first argument); an exception it raises (or a value that does not fit `sig`, the
    function's `signature`) becomes a trap whose message `on_error` writes."""
    params, result = sig
    func = _hostcall.HostFunc(impl, params, result, on_error)
    _hostcall.add_func(_address(inst), name.encode(), func)
    return func


def add_resource(
    inst: LinkerInstance, name: str, ty: ResourceType, dtor: Callable[[HostResource], None]
) -> None:
    """Defines the host resource `name`. When the guest drops its last handle, the object leaves
    the store's table, and `dtor(obj)` runs if its class overrides `HostResource.on_drop`."""
    _hostcall.add_resource(_address(inst), name.encode(), _address(ty), dtor)
