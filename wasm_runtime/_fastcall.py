"""C-speed `list<u8>` crossings and cheap host calls for wasmtime-py 49.0.0.

wasmtime-py converts a `list<u8>` one Python call per byte (about 2 s per MiB each way here) and
rebuilds a host function's parameter and result types from C on every call. Bodies and the ~30
host calls a request makes are the product, so this module replaces those paths, reaching beneath
wasmtime-py's public API. Everything that does so lives here, guarded by an exact version check and
a layout self-test, so that a wasmtime upgrade fails loudly instead of corrupting memory.

What `install()` changes, process-wide:

- `ListType.convert_to_c` / `convert_from_c` for `list<u8>`: one vallist allocation and two strided
  memoryview copies (the `u8` payload of `wasmtime_component_val_t` sits at a fixed offset with a
  fixed stride) instead of a Python call per byte. Other lists keep the generic path.
- Type trees are memoized: `element`, `fields`, `cases`, `payload`, `ok`, `err`, variant tagging and
  case classes are computed once per type object instead of through C on every conversion.
- The host-call trampoline (`_linker.func_impl`) keeps a conversion plan per host function and
  function type. The type pointer wasmtime passes is a per-call temporary, so the plan is keyed by
  what that temporary holds: the component's `Arc<ComponentTypes>` address and the `TypeFuncIndex`
  (offsets 0 and 16, found by reading the 49.0.0 structure). The plan keeps a clone of the type, so
  the Arc, hence the address, cannot be reused while the plan lives; plans are dropped when their
  host function is finalized (its linker is gone), since wasmtime-py reuses function slots.
- `Func.__call__` (calling a guest export) caches its parameter and result types the same way.

What it cannot change, because wasmtime does it in Rust behind the C API: each byte of a list<u8>
is a 32-byte C value and a Rust `Val`, converted and type-checked one by one (about 40-50 ms per
MiB per direction on this machine), and each crossing is capped by wasmtime's hostcall fuel
(128 MiB at 48 per element: at most 2,796,202 bytes in one list). Bodies must cross in chunks.

Public: `install()`, `is_installed()`, `stats()`, `installed_version()`, `TARGET_VERSION`,
`MAX_LIST_BYTES`. `install()` is idempotent; it raises RuntimeError on any other wasmtime version
and logs and leaves wasmtime-py untouched if the value layout is not the one checked for.
"""

from __future__ import annotations

import ctypes
import importlib.metadata
import logging
import struct
import threading
from collections.abc import Callable
from ctypes import byref
from typing import Any

import wasmtime
import wasmtime.component._enter as _enter
import wasmtime.component._func as _func
import wasmtime.component._linker as _linker
import wasmtime.component._types as _types
from wasmtime import StoreContext, WasmtimeError
from wasmtime import _ffi as ffi
from wasmtime.component._resources import ResourceAny as _ResourceAny

log = logging.getLogger(__name__)

TARGET_VERSION = "49.0.0"
# The most bytes one list<u8> can carry across the boundary in wasmtime 49, fast path or not:
# each element costs 48 of the 128 MiB of "hostcall fuel" a call gets, and the C API cannot
# raise it. One byte more traps the call ("fuel allocated for hostcalls has been exhausted").
MAX_LIST_BYTES = (128 << 20) // 48

_VAL = ffi.wasmtime_component_val_t
_VALLIST = ffi.wasmtime_component_vallist_t
# The layout this module writes into directly; checked against ctypes at install time and
# against the C library itself by a round trip through `wasmtime_component_val_clone`.
_STRIDE = 32
_KIND_OFFSET = 0
_PAYLOAD_OFFSET = 8
_KIND_U8 = 2
_KIND_LIST = 13
# `wasmtime_component_func_type_t` in 49.0.0: Arc<ComponentTypes> at 0, Arc of resource types at 8,
# TypeFuncIndex (u32) at 16. Only the first and last identify the function type.
_FUNC_TYPE_KEY = struct.Struct("<Q8xI")
_FUNC_TYPE_BYTES = ctypes.c_char * _FUNC_TYPE_KEY.size
_FUNC_TYPE_P = ctypes.POINTER(ffi.wasmtime_component_func_type_t)
# Plans kept per host function; more than this many types for one function means the linker is
# shared by many components with different signatures, and the oldest plan is dropped.
_MAX_PLANS_PER_FUNC = 8
# Export type entries pin their component's type tables; past this many (components retired by
# redeploys), the cache starts over rather than keep dead components' tables alive.
_MAX_EXPORT_TYPES = 4096

_lock = threading.Lock()
_installed = False
_plans: dict[tuple[int, int, int], _HostPlan] = {}
_plan_keys_by_func: dict[int, list[tuple[int, int, int]]] = {}
_export_types: dict[tuple[int, int], tuple[Any, list[Any], Any]] = {}
_stats = {"host_plans_built": 0, "host_plan_hits": 0, "export_plans_built": 0, "export_plan_hits": 0}

# Sized on demand: the kind byte of every element of a list<u8> vallist.
_u8_kinds = memoryview(b"")


def installed_version() -> str:
    """The wasmtime distribution version: `wasmtime` 49.0.0 has no `__version__` attribute."""
    version = getattr(wasmtime, "__version__", None)
    return version if isinstance(version, str) else importlib.metadata.version("wasmtime")


def is_installed() -> bool:
    """False until `install()` succeeds; stays False if the layout check refused it."""
    return _installed


def stats() -> dict[str, int]:
    """Plan cache counters, for tests and the benchmark: a hit is a host call with no type rebuild."""
    return dict(_stats, host_plans=len(_plans), export_plans=len(_export_types))


def install() -> None:
    """Switch wasmtime-py to the fast paths, once per process; later calls do nothing."""
    global _installed
    version = installed_version()
    if version != TARGET_VERSION:
        raise RuntimeError(
            f"wasm_runtime._fastcall is written against wasmtime {TARGET_VERSION} internals; found {version}"
        )
    with _lock:
        if _installed:
            return
        problem = _layout_problem()
        if problem is not None:
            log.error("wasm_runtime._fastcall not installed, keeping wasmtime-py's slow paths: %s", problem)
            return
        _patch_types()
        _linker.func_impl = _func_impl_c
        _linker.func_finalize = _func_finalize_c
        _func.Func.__call__ = _func_call  # type: ignore[method-assign]
        _installed = True


# ---------------------------------------------------------------------------------------------
# list<u8>


def _kinds(n: int) -> memoryview:
    global _u8_kinds
    if len(_u8_kinds) < n:
        _u8_kinds = memoryview(bytes([_KIND_U8]) * max(n, 2 * len(_u8_kinds), 4096))
    return _u8_kinds[:n]


def _elements(data_address: int, n: int) -> memoryview:
    return memoryview((ctypes.c_ubyte * (n * _STRIDE)).from_address(data_address)).cast("B")


def _lower_bytes(val: bytes, ptr: Any) -> None:
    """Fill `*ptr` with a list<u8> holding `val`: two strided copies, no per-byte Python."""
    n = len(val)
    raw = _VALLIST()
    ffi.wasmtime_component_vallist_new_uninit(raw, n)
    if n:
        elems = _elements(ctypes.addressof(raw.data.contents), n)
        elems[_KIND_OFFSET::_STRIDE] = _kinds(n)
        elems[_PAYLOAD_OFFSET::_STRIDE] = val
    contents = ptr.contents
    contents.kind = _KIND_LIST
    contents.of.list = raw


def _lift_bytes(c: Any) -> bytes:
    """Read a list<u8> value into bytes and free its vallist, as the generic path does."""
    if c.kind != _KIND_LIST:
        raise AssertionError(f"expected a list value, found kind {c.kind}")
    lst = c.of.list
    try:
        n = lst.size
        if not n:
            return b""
        elems = _elements(ctypes.addressof(lst.data.contents), n)
        # wasmtime built this list from a list<u8>-typed value, so every kind is u8; probing three
        # elements catches a mismatched type without a second pass over the whole array.
        for i in (0, n // 2, n - 1):
            if elems[i * _STRIDE + _KIND_OFFSET] != _KIND_U8:
                raise AssertionError(f"list<u8> value holds a non-u8 element at {i}")
        return bytes(elems[_PAYLOAD_OFFSET::_STRIDE])
    finally:
        ffi.wasmtime_component_vallist_delete(byref(lst))


# ---------------------------------------------------------------------------------------------
# Memoized type trees


def _memo(name: str, compute: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """A getter that computes once per type object; type objects are immutable views of C types."""
    slot = "_fc_" + name

    def get(self: Any) -> Any:
        try:
            return self.__dict__[slot]
        except KeyError:
            value = self.__dict__[slot] = compute(self)
            return value

    get.__name__ = name
    return get


def _is_bytes(self: Any) -> bool:
    return isinstance(self.element, _types.U8)


def _classes(self: Any) -> frozenset[type]:
    found: set[type] = set()
    add = _orig["add_classes"].get(type(self)) or type(self).add_classes
    add(self, found)
    return frozenset(found)


def _add_classes(self: Any, s: set[type]) -> None:
    s |= _memo_classes(self)


_memo_classes = _memo("classes", _classes)


def _case_plan(self: Any) -> tuple[bool, tuple[tuple[str, Any, tuple[type, ...] | None], ...]]:
    """(tagged, cases with the classes an untagged value must be an instance of)."""
    tagged = self._tagged()
    cases = []
    for name, ty in self._cases():
        classes = None if ty is None else tuple(_memo_classes(ty))
        cases.append((name, ty, classes))
    return tagged, tuple(cases)


_memo_case_plan = _memo("case_plan", _case_plan)


def _variant_lower(self: Any, store: Any, val: Any) -> tuple[str, Any]:
    """wasmtime-py's `VariantLikeType._lower`, with the case walk precomputed."""
    tagged, cases = _memo_case_plan(self)
    if tagged and not isinstance(val, _types.Variant):
        raise TypeError("expected Variant type")
    for name, ty, classes in cases:
        if tagged:
            if name != val.tag:
                continue
        elif ty is None:
            if val is not None:
                continue
        elif not isinstance(val, classes):  # type: ignore[arg-type]
            continue
        if ty is None:
            return (name, None)
        raw = _VAL()
        ty.convert_to_c(store, val.payload if tagged else val, ctypes.pointer(raw))
        return (name, ffi.wasmtime_component_val_new(byref(raw)))
    raise ValueError("value not valid for this variant")


def _variant_lift(self: Any, tag: str, ptr: Any) -> Any:
    """wasmtime-py's `VariantLikeType._lift`, with the case walk precomputed."""
    tagged, cases = _memo_case_plan(self)
    for name, ty, _ in cases:
        if name != tag:
            continue
        if ty is None:
            return _types.Variant(tag) if tagged else None
        contents = ptr.contents
        payload = ty.convert_from_c(contents)
        contents.kind = ffi.WASMTIME_COMPONENT_BOOL
        contents.of.boolean = False
        ffi.wasmtime_component_val_delete(ptr)
        return _types.Variant(tag, payload) if tagged else payload
    raise ValueError(f"tag {tag} not found in variant cases")


def _list_to_c(self: Any, store: Any, val: Any, ptr: Any) -> None:
    if _memo_is_bytes(self):
        if not isinstance(val, bytes):
            raise TypeError("expected bytes value")
        _lower_bytes(val, ptr)
    else:
        _orig["list_to_c"](self, store, val, ptr)


def _list_from_c(self: Any, c: Any) -> Any:
    if _memo_is_bytes(self):
        return _lift_bytes(c)
    return _orig["list_from_c"](self, c)


_memo_is_bytes = _memo("is_bytes", _is_bytes)
_orig: dict[str, Any] = {}

# (class, property) pairs whose value is a pure function of the C type the object wraps.
_MEMO_PROPERTIES = (
    (_types.ListType, "element"),
    (_types.RecordType, "fields"),
    (_types.TupleType, "elements"),
    (_types.VariantType, "cases"),
    (_types.OptionType, "payload"),
    (_types.ResultType, "ok"),
    (_types.ResultType, "err"),
    (_types.EnumType, "names"),
    (_types.FlagsType, "names"),
)
_CLASSES_MEMOIZED = (
    _types.ListType, _types.RecordType, _types.TupleType, _types.VariantType,
    _types.OptionType, _types.ResultType,
)


def _patch_types() -> None:
    for cls, name in _MEMO_PROPERTIES:
        prop = cls.__dict__[name]
        setattr(cls, name, property(_memo(f"{cls.__name__}.{name}", prop.fget)))
    _orig["add_classes"] = {cls: cls.add_classes for cls in _CLASSES_MEMOIZED}
    for cls in _CLASSES_MEMOIZED:
        cls.add_classes = _add_classes  # type: ignore[method-assign]
    tagged = _types.VariantLikeType._tagged
    _types.VariantLikeType._tagged = _memo("tagged", tagged)  # type: ignore[method-assign]
    _types.VariantLikeType._lower = _variant_lower  # type: ignore[method-assign]
    _types.VariantLikeType._lift = _variant_lift  # type: ignore[method-assign]
    _orig["list_to_c"] = _types.ListType.convert_to_c
    _orig["list_from_c"] = _types.ListType.convert_from_c
    _types.ListType._is_bytes = _memo_is_bytes  # type: ignore[method-assign]
    _types.ListType.convert_to_c = _list_to_c  # type: ignore[method-assign]
    _types.ListType.convert_from_c = _list_from_c  # type: ignore[method-assign]


# ---------------------------------------------------------------------------------------------
# Host calls


# Integer and float kinds whose payload is read straight from the value bytes:
# type -> (value kind, struct code for the payload at offset 8).
_SCALARS: dict[type, tuple[int, str]] = {
    _types.Bool: (0, "?"), _types.S8: (1, "b"), _types.U8: (2, "B"), _types.S16: (3, "h"),
    _types.U16: (4, "H"), _types.S32: (5, "i"), _types.U32: (6, "I"), _types.S64: (7, "q"),
    _types.U64: (8, "Q"), _types.F32: (9, "f"), _types.F64: (10, "d"),
}
# Integer results written straight into the value: type -> (kind, unsigned code, bit mask).
# ctypes wraps out-of-range ints silently when the generic path assigns the field; masking
# writes the same bits.
_INT_RESULTS: dict[type, tuple[int, str, int]] = {
    _types.S8: (1, "B", 0xFF), _types.U8: (2, "B", 0xFF), _types.S16: (3, "H", 0xFFFF),
    _types.U16: (4, "H", 0xFFFF), _types.S32: (5, "I", 0xFFFFFFFF), _types.U32: (6, "I", 0xFFFFFFFF),
    _types.S64: (7, "Q", 0xFFFFFFFFFFFFFFFF), _types.U64: (8, "Q", 0xFFFFFFFFFFFFFFFF),
}
_SCALAR_BYTES = ctypes.c_char * 16


_KIND_RESOURCE = 21
_RESOURCE_ANY = ffi.wasmtime_component_resource_any_t
_RESOURCE_ANY_P = ctypes.POINTER(_RESOURCE_ANY)


def _read_resource(address: int) -> Any:
    """`OwnType`/`BorrowType.convert_from_c`: take the handle pointer out of the value, leave NULL."""
    found = ctypes.c_uint8.from_address(address + _KIND_OFFSET).value
    if found != _KIND_RESOURCE:
        raise AssertionError(f"expected a resource argument, found value kind {found}")
    slot = ctypes.c_void_p.from_address(address + _PAYLOAD_OFFSET)
    handle = slot.value
    if not handle:
        raise AssertionError("resource argument holds a null handle")
    slot.value = None
    return _ResourceAny._from_ptr(_RESOURCE_ANY_P(_RESOURCE_ANY.from_address(handle)))


def _param_reader(ty: Any) -> Callable[[int], Any]:
    """How to read one argument at an address: scalars from the raw bytes, the rest generically."""
    if isinstance(ty, (_types.OwnType, _types.BorrowType)):
        return _read_resource
    scalar = _SCALARS.get(type(ty))
    if scalar is None:
        convert = ty.convert_from_c
        return lambda address: convert(_VAL.from_address(address))
    kind, code = scalar
    unpack = struct.Struct("<B7x" + code).unpack_from
    name = type(ty).__name__

    def read(address: int) -> Any:
        found, value = unpack(_SCALAR_BYTES.from_address(address).raw)
        if found != kind:
            raise AssertionError(f"expected a {name} argument, found value kind {found}")
        return value

    return read


def _result_writer(ty: Any) -> Callable[[Any, Any, int], None]:
    int_result = _INT_RESULTS.get(type(ty))
    if int_result is None:
        convert = ty.convert_to_c
        return lambda store, value, address: convert(store, value, ctypes.pointer(_VAL.from_address(address)))
    kind, code, mask = int_result
    pack_into = struct.Struct("<B7x" + code).pack_into
    message = f"expected int for {type(ty).__name__} type"

    def write(store: Any, value: Any, address: int) -> None:
        if not isinstance(value, int):
            raise TypeError(message)
        pack_into(_SCALAR_BYTES.from_address(address), 0, kind, value & mask)

    return write


class _HostPlan:
    """How to convert one host function's arguments and result for one component function type."""

    __slots__ = ("fty", "n_params", "readers", "write_result")

    def __init__(self, fty: Any) -> None:
        self.fty = fty  # owns a clone of the type: keeps the key's Arc address from being reused
        self.readers = tuple(_param_reader(ty) for _, ty in fty.params)
        self.n_params = len(self.readers)
        result = fty.result
        self.write_result = None if result is None else _result_writer(result)


def _plan_for(idx: int, ty: int) -> _HostPlan:
    types_addr, func_index = _FUNC_TYPE_KEY.unpack(_FUNC_TYPE_BYTES.from_address(ty).raw)
    key = (idx, types_addr, func_index)
    plan = _plans.get(key)
    if plan is not None:
        _stats["host_plan_hits"] += 1
        return plan
    clone = ffi.wasmtime_component_func_type_clone(ctypes.cast(ty, _FUNC_TYPE_P))
    plan = _HostPlan(_types.FuncType._from_ptr(clone))
    with _lock:
        keys = _plan_keys_by_func.setdefault(idx, [])
        if key not in _plans:
            keys.append(key)
            if len(keys) > _MAX_PLANS_PER_FUNC:
                _plans.pop(keys.pop(0), None)
        _plans[key] = plan
        _stats["host_plans_built"] += 1
    return plan


def _func_impl(
    idx: int | None, context: Any, ty: int, args: int, nargs: int, results: int, nresults: int
) -> int:
    """wasmtime-py's `func_impl` and `catch_exceptions` in one, minus the per-call type rebuild.

    Errors travel as there: a WasmtimeError is handed to wasmtime as is; any other exception is
    parked in `_enter.LAST_EXCEPTION`, which `enter_wasm` re-raises in the caller of the guest.
    """
    store = StoreContext(context)
    try:
        i = idx or 0
        plan = _plan_for(i, ty)
        if plan.n_params != nargs:
            raise AssertionError(f"host function got {nargs} arguments, its type has {plan.n_params}")
        result = _linker.FUNCTIONS.get(i)(
            store, *[read(args + n * _STRIDE) for n, read in enumerate(plan.readers)]
        )
        if plan.write_result is None:
            if nresults != 0 or result is not None:
                raise AssertionError("host function without a result type returned a value")
        else:
            if nresults != 1:
                raise AssertionError("host function result count does not match its type")
            plan.write_result(store, result, results)
        return 0
    except WasmtimeError as exc:
        return ctypes.cast(exc._consume(), ctypes.c_void_p).value or 0
    except Exception as exc:
        _enter.LAST_EXCEPTION = exc
        return ctypes.cast(WasmtimeError("python exception")._consume(), ctypes.c_void_p).value or 0
    finally:
        store._invalidate()


_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_size_t, ctypes.c_void_p, ctypes.POINTER(ffi.wasmtime_context_t), ctypes.c_void_p,
    ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p, ctypes.c_size_t,
)
# Same C signature as `wasmtime_component_func_callback_t`, but pointers arrive as ints, which
# is cheaper than ctypes pointer objects; cast so `add_func`'s argtypes accept it.
_func_impl_raw = _CALLBACK(_func_impl)
_func_impl_c = ctypes.cast(_func_impl_raw, ffi.wasmtime_component_func_callback_t)


def _func_finalize(idx: int | None) -> None:
    """Runs when a host function's linker is gone: its slot may be reused, so forget its plans."""
    i = idx or 0
    with _lock:
        for key in _plan_keys_by_func.pop(i, ()):
            _plans.pop(key, None)
    if _linker.FUNCTIONS:
        _linker.FUNCTIONS.deallocate(i)


_func_finalize_c = ctypes.CFUNCTYPE(None, ctypes.c_void_p)(_func_finalize)


# ---------------------------------------------------------------------------------------------
# Guest exports


def _export_types_for(func: Any, store: Any) -> tuple[list[Any], Any]:
    ptr = ffi.wasmtime_component_func_type(byref(func._func), store._context())
    key = _FUNC_TYPE_KEY.unpack(_FUNC_TYPE_BYTES.from_address(ctypes.addressof(ptr.contents)).raw)
    cached = _export_types.get(key)
    if cached is not None:
        ffi.wasmtime_component_func_type_delete(ptr)
        _stats["export_plan_hits"] += 1
        return cached[1], cached[2]
    fty = _types.FuncType._from_ptr(ptr)  # kept: its Arc pins the key's address
    params = [ty for _, ty in fty.params]
    result = fty.result
    with _lock:
        if len(_export_types) >= _MAX_EXPORT_TYPES:
            _export_types.clear()
        _export_types[key] = (fty, params, result)
        _stats["export_plans_built"] += 1
    return params, result


def _func_call(self: Any, store: Any, *params: Any) -> Any:
    """wasmtime-py's `Func.__call__` with the function's types cached."""
    param_tys, result_ty = _export_types_for(self, store)
    if len(params) != len(param_tys):
        raise TypeError(
            f"wrong number of parameters provided: given {len(params)}, expected {len(param_tys)}"
        )
    param_capi = (_VAL * len(params))()
    n = 0
    try:
        for ty, val in zip(param_tys, params, strict=True):
            ty.convert_to_c(store, val, ctypes.pointer(param_capi[n]))
            n += 1
        result_space = _VAL() if result_ty is not None else None

        def run() -> Any:
            return ffi.wasmtime_component_func_call(
                byref(self._func), store._context(), param_capi, n,
                None if result_space is None else byref(result_space), 0 if result_space is None else 1,
            )

        _enter.enter_wasm(run)
        if result_space is None:
            return None
        return result_ty.convert_from_c(result_space)
    finally:
        for i in range(n):
            ffi.wasmtime_component_val_delete(byref(param_capi[i]))


# ---------------------------------------------------------------------------------------------
# Install-time checks


def _layout_problem() -> str | None:
    """Why the direct writes would be wrong on this build, or None if the layout is as expected."""
    checks = {
        "sizeof(wasmtime_component_val_t)": (ctypes.sizeof(_VAL), _STRIDE),
        "offset of val.kind": (_VAL.kind.offset, _KIND_OFFSET),
        "offset of val.of": (_VAL.of.offset, _PAYLOAD_OFFSET),
        "offset of of.u8": (ffi.wasmtime_component_valunion_t.u8.offset, 0),
        "sizeof(val.kind)": (ctypes.sizeof(ffi.wasmtime_component_valkind_t), 1),
        "WASMTIME_COMPONENT_U8": (ffi.WASMTIME_COMPONENT_U8.value, _KIND_U8),
        "WASMTIME_COMPONENT_LIST": (ffi.WASMTIME_COMPONENT_LIST.value, _KIND_LIST),
        "offset of vallist.data": (_VALLIST.data.offset, 8),
    }
    for what, (found, expected) in checks.items():
        if found != expected:
            return f"{what} is {found}, expected {expected}"
    # The C library reads what we write and writes what we read: clone a list through it.
    sample = bytes(range(256)) * 3 + b"\x00\xff\x7f"
    src = _VAL()
    _lower_bytes(sample, ctypes.pointer(src))
    dst = _VAL()
    try:
        ffi.wasmtime_component_val_clone(byref(src), byref(dst))
        back = _lift_bytes(dst)
    except AssertionError as exc:
        return f"list<u8> cloned by wasmtime reads back wrong: {exc}"
    finally:
        ffi.wasmtime_component_val_delete(byref(src))
    if back != sample:
        return "list<u8> cloned by wasmtime reads back different bytes"
    return None
