"""One repair to wasmtime-py 49 that a multi-threaded host needs.

`VariantLikeType._lower` (how a raw `result`/`option`/`variant` value finds its case) keeps
its scratch set in a module global, `case_test_cache`, cleared and refilled on every call. Two
worker threads lowering at once corrupt each other's set and a valid value fails with "value not
valid for this variant". The replacement below is the same algorithm with a local set. It is
installed once, before any component is linked; `_fastcall`, when present, may replace these
paths again with its own (equally thread-safe) code.
"""

from __future__ import annotations

import ctypes
from ctypes import byref
from typing import Any

from wasmtime import _ffi as ffi
from wasmtime.component import _types

_installed = False


def _lower(self: Any, store: Any, val: Any) -> tuple[str, Any]:
    tagged = self._tagged()
    if tagged and not isinstance(val, _types.Variant):
        raise TypeError("expected Variant type")
    for name, ty in self._cases():
        if tagged:
            if name != val.tag:
                continue
        elif ty is None:
            if val is not None:
                continue
        else:
            classes: set[type] = set()
            ty.add_classes(classes)
            if not isinstance(val, tuple(classes)):
                continue
        if ty is None:
            return (name, None)
        raw = ffi.wasmtime_component_val_t()
        payload = val.payload if tagged else val
        ty.convert_to_c(store, payload, ctypes.pointer(raw))
        return (name, ffi.wasmtime_component_val_new(byref(raw)))
    raise ValueError("value not valid for this variant")


def install() -> None:
    global _installed
    if _installed:
        return
    _types.VariantLikeType._lower = _lower  # type: ignore[method-assign]
    _installed = True
