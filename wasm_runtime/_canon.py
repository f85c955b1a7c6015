"""The host's canonical component values.

wasmtime-py decides per type whether a `result`, `option` or `variant` is passed tagged
(`Variant(tag, payload)`) or raw, depending on whether its cases can be told apart by Python
class. Host code should not care, so it always speaks one canonical form, which the crossing
(`_crossing`, `_hostcall.c`) reads and writes directly:

    result   -> Ok(value) / Err(value)
    option   -> None / value          (WASI 0.2 never nests options directly)
    variant  -> Variant(tag, payload) (wasmtime's class), payload None for bare cases
    record   -> dict keyed by WIT field name
    enum     -> str, flags -> set[str], tuple -> tuple, list<u8> -> bytes, other lists -> list
    own<T>   -> a HostResource (lowered into the store's table, `_hostcall.ResourceTable`);
               borrow<T> -> the same object
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


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
