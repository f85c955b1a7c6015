"""C-speed `list<u8>` crossings and cheap guest calls for wasmtime-py 49.0.0.

wasmtime-py converts a `list<u8>` one Python call per byte (about 2 s per MiB each way here) and
rebuilds a function's parameter and result types from C on every call. The runtime's own calls no
longer pass through wasmtime-py at all (host functions and the handler's export cross in C,
`_crossing`); what still does, a guest export called through wasmtime-py's `Func` and the values
it carries, is made cheap here, reaching beneath wasmtime-py's public API. Everything that does
so lives here, guarded by an exact version check and a layout self-test, so that a wasmtime
upgrade fails loudly instead of corrupting memory.

What `install()` changes, process-wide:

- `ListType.convert_to_c` / `convert_from_c` for `list<u8>`: one vallist allocation and two strided
  memoryview copies (the `u8` payload of `wasmtime_component_val_t` sits at a fixed offset with a
  fixed stride) instead of a Python call per byte. Other lists keep the generic path.
- Type trees are memoized: `element`, `fields`, `cases`, `payload`, `ok`, `err`, variant tagging and
  case classes are computed once per type object instead of through C on every conversion.
- `Func.__call__` (calling a guest export) caches its parameter and result types, keyed by what
  the type pointer wasmtime hands out holds: the component's `Arc<ComponentTypes>` address and the
  `TypeFuncIndex` (offsets 0 and 16, found by reading the 49.0.0 structure). The cache keeps a
  clone of the type, so the Arc, hence the address, cannot be reused while the entry lives.

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
import wasmtime.component._types as _types
from wasmtime import _ffi as ffi

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
# Export type entries pin their component's type tables; past this many (components retired by
# redeploys), the cache starts over rather than keep dead components' tables alive.
_MAX_EXPORT_TYPES = 4096

_lock = threading.Lock()
_installed = False
_export_types: dict[tuple[int, int], tuple[Any, list[Any], Any]] = {}
_stats = {"export_plans_built": 0, "export_plan_hits": 0}

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
    return dict(_stats, export_plans=len(_export_types))


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
    _types.VariantLikeType._tagged = _memo("tagged", tagged)  # type: ignore[method-assign, assignment]
    _types.VariantLikeType._lower = _variant_lower  # type: ignore[method-assign]
    _types.VariantLikeType._lift = _variant_lift  # type: ignore[method-assign]
    _orig["list_to_c"] = _types.ListType.convert_to_c
    _orig["list_from_c"] = _types.ListType.convert_from_c
    _types.ListType._is_bytes = _memo_is_bytes  # type: ignore[method-assign, assignment]
    _types.ListType.convert_to_c = _list_to_c  # type: ignore[method-assign]
    _types.ListType.convert_from_c = _list_from_c  # type: ignore[method-assign]


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
        "offset of of.u8": (ffi.wasmtime_component_valunion_t.u8.offset, 0),  # type: ignore[attr-defined]
        "sizeof(val.kind)": (ctypes.sizeof(ffi.wasmtime_component_valkind_t), 1),
        "WASMTIME_COMPONENT_U8": (ffi.WASMTIME_COMPONENT_U8.value, _KIND_U8),
        "WASMTIME_COMPONENT_LIST": (ffi.WASMTIME_COMPONENT_LIST.value, _KIND_LIST),
        "offset of vallist.data": (_VALLIST.data.offset, 8),  # type: ignore[attr-defined]
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
