"""The host's canonical component values, and the table its resources live in.

wasmtime-py decides per type whether a `result`, `option` or `variant` is passed tagged
(`Variant(tag, payload)`) or raw, depending on whether its cases can be told apart by Python
class. Host code should not care, so it always speaks one canonical form, which the crossing
(`_crossing`, `_hostcall.c`) reads and writes directly:

    result   -> Ok(value) / Err(value)
    option   -> None / value          (WASI 0.2 never nests options directly)
    variant  -> Variant(tag, payload) (wasmtime's class), payload None for bare cases
    record   -> dict keyed by WIT field name
    enum     -> str, flags -> set[str], tuple -> tuple, list<u8> -> bytes, other lists -> list
    own<T>   -> a HostResource (lowered into the store's table); borrow<T> -> the same object
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from wasmtime import WasmtimeError


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
