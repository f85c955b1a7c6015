"""Conversions between the host's canonical Python values and wasmtime-py's component values.

wasmtime-py decides per type whether a `result`, `option` or `variant` is passed tagged
(`Variant(tag, payload)`) or raw, depending on whether its cases can be told apart by Python
class. Host code should not care, so it always speaks one canonical form and the functions here,
compiled once per imported function type at link time, translate:

    result   -> Ok(value) / Err(value)
    option   -> None / value          (WASI 0.2 never nests options directly)
    variant  -> Variant(tag, payload) (wasmtime's class), payload None for bare cases
    record   -> dict keyed by WIT field name
    enum     -> str, flags -> set[str], tuple -> tuple, list<u8> -> bytes
    own<T>   -> a HostResource (lowered into the store's table); borrow<T> -> the same object
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from wasmtime import WasmtimeError
from wasmtime.component import (
    BorrowType,
    ListType,
    OptionType,
    OwnType,
    Record,
    RecordType,
    ResourceAny,
    ResourceHost,
    ResultType,
    TupleType,
    ValType,
    Variant,
    VariantType,
)

Lower = Callable[[Any], Any]
Lift = Callable[[Any, Any], Any]  # (store, value) -> canonical


@dataclass(slots=True)
class Ok:
    value: Any = None


@dataclass(slots=True)
class Err:
    value: Any = None


class HostResource:
    """Base of every host-side resource; `resource_id` names its host ResourceType."""

    resource_id: int = 0

    def on_drop(self) -> None:
        """Called when the guest drops its last handle; most resources need nothing."""


class ResourceTable:
    """Handles (reps) of one Store; a rep maps to the host object it stands for."""

    __slots__ = ("_items", "_next")

    def __init__(self) -> None:
        self._items: dict[int, HostResource] = {}
        self._next = 1

    def add(self, obj: HostResource) -> int:
        rep = self._next
        self._next += 1
        self._items[rep] = obj
        return rep

    def get(self, rep: int) -> HostResource:
        try:
            return self._items[rep]
        except KeyError:
            raise WasmtimeError(f"unknown resource handle {rep}") from None

    def pop(self, rep: int) -> HostResource | None:
        return self._items.pop(rep, None)

    def __len__(self) -> int:
        return len(self._items)


TableGetter = Callable[[], ResourceTable]


def compile_lower(ty: ValType | None, table: TableGetter) -> Lower | None:
    """Returns a canonical->wasmtime converter, or None when the value passes unchanged."""
    if ty is None:
        return None
    if isinstance(ty, OwnType | BorrowType):

        def own(v: HostResource) -> ResourceHost:
            return ResourceHost.own(table().add(v), v.resource_id)

        return own
    if isinstance(ty, ListType):
        elem = compile_lower(ty.element, table)
        if elem is None:
            return None
        return lambda v: [elem(x) for x in v]
    if isinstance(ty, TupleType):
        elems = [compile_lower(e, table) for e in ty.elements]
        if all(e is None for e in elems):
            return tuple
        return lambda v: tuple(x if f is None else f(x) for f, x in zip(elems, v, strict=True))
    if isinstance(ty, RecordType):
        fields = [(name, compile_lower(fty, table)) for name, fty in ty.fields]

        def record(v: dict[str, Any]) -> Record:
            r = Record()
            for name, f in fields:
                x = v.get(name)
                setattr(r, name, x if f is None or x is None else f(x))
            return r

        return record
    if isinstance(ty, OptionType):
        inner = compile_lower(ty.payload, table)
        if ty._tagged():
            return lambda v: (
                Variant("none") if v is None else Variant("some", v if inner is None else inner(v))
            )
        if inner is None:
            return None
        return lambda v: None if v is None else inner(v)
    if isinstance(ty, ResultType):
        ok = compile_lower(ty.ok, table)
        err = compile_lower(ty.err, table)
        tagged = ty._tagged()

        def result(v: Ok | Err) -> Any:
            if isinstance(v, Ok):
                payload = v.value if ok is None or v.value is None else ok(v.value)
                return Variant("ok", payload) if tagged else payload
            if isinstance(v, Err):
                payload = v.value if err is None or v.value is None else err(v.value)
                return Variant("err", payload) if tagged else payload
            raise TypeError(f"expected Ok or Err, got {v!r}")

        return result
    if isinstance(ty, VariantType):
        cases = {name: compile_lower(cty, table) for name, cty in ty.cases}
        tagged = ty._tagged()

        def variant(v: Variant) -> Any:
            f = cases[v.tag]
            payload = v.payload if f is None or v.payload is None else f(v.payload)
            return Variant(v.tag, payload) if tagged else payload

        return variant
    return None


def _classes(ty: ValType | None) -> tuple[type, ...]:
    s: set[type] = set()
    if ty is None:
        return (type(None),)
    ty.add_classes(s)
    s.discard(object)
    return tuple(s)


def compile_lift(ty: ValType | None, table: TableGetter) -> Lift | None:
    """Returns a wasmtime->canonical converter (borrows and owns resolved), or None for identity."""
    if ty is None:
        return None
    if isinstance(ty, BorrowType):

        def borrow(store: Any, v: ResourceAny) -> HostResource:
            return table().get(v.to_host(store).rep)

        return borrow
    if isinstance(ty, OwnType):

        def own(store: Any, v: ResourceAny) -> HostResource:
            rep = v.to_host(store).rep
            obj = table().pop(rep)
            if obj is None:
                raise WasmtimeError(f"unknown resource handle {rep}")
            return obj

        return own
    if isinstance(ty, ListType):
        elem = compile_lift(ty.element, table)
        if elem is None:
            return None
        return lambda s, v: [elem(s, x) for x in v]
    if isinstance(ty, TupleType):
        elems = [compile_lift(e, table) for e in ty.elements]
        if all(e is None for e in elems):
            return None
        return lambda s, v: tuple(x if f is None else f(s, x) for f, x in zip(elems, v, strict=True))
    if isinstance(ty, RecordType):
        fields = [(name, compile_lift(fty, table)) for name, fty in ty.fields]
        return lambda s, v: {
            n: (getattr(v, n) if f is None or getattr(v, n) is None else f(s, getattr(v, n)))
            for n, f in fields
        }
    if isinstance(ty, OptionType):
        inner = compile_lift(ty.payload, table)
        if ty._tagged():

            def opt_tagged(s: Any, v: Variant) -> Any:
                if v.tag == "none":
                    return None
                return v.payload if inner is None else inner(s, v.payload)

            return opt_tagged
        if inner is None:
            return None
        return lambda s, v: None if v is None else inner(s, v)
    if isinstance(ty, ResultType):
        ok = compile_lift(ty.ok, table)
        err = compile_lift(ty.err, table)
        if ty._tagged():

            def res_tagged(s: Any, v: Variant) -> Ok | Err:
                if v.tag == "ok":
                    return Ok(v.payload if ok is None or v.payload is None else ok(s, v.payload))
                return Err(v.payload if err is None or v.payload is None else err(s, v.payload))

            return res_tagged
        ok_classes = _classes(ty.ok)

        def res_raw(s: Any, v: Any) -> Ok | Err:
            if isinstance(v, ok_classes):
                return Ok(v if ok is None or v is None else ok(s, v))
            return Err(v if err is None or v is None else err(s, v))

        return res_raw
    if isinstance(ty, VariantType):
        cases = ty.cases
        lifts = {name: compile_lift(cty, table) for name, cty in cases}
        if ty._tagged():

            def var_tagged(s: Any, v: Variant) -> Variant:
                f = lifts[v.tag]
                return v if f is None or v.payload is None else Variant(v.tag, f(s, v.payload))

            return var_tagged
        by_class = [(name, _classes(cty), lifts[name]) for name, cty in cases]

        def var_raw(s: Any, v: Any) -> Variant:
            for name, classes, f in by_class:
                if isinstance(v, classes):
                    return Variant(name, None if v is None else (v if f is None else f(s, v)))
            raise TypeError(f"no variant case for {v!r}")

        return var_raw
    return None
