"""From a guest's bytes to a compiled Component, with what edgefn adds around it.

Two rewrites, each optional for the guest: the memory probe (_memory_probe, the REPORT's Max Memory
Used) is appended to the guest, then the guest is nested in the byte adapter's wrapper
(_body_adapter). A rewrite that cannot be made, or whose result does not compile, is dropped with
a log line and the guest is compiled without it: a guest that wasmtime accepts is never refused
because of what edgefn would have added. The one exception is a guest that exports the probe's
reserved name itself, refused so that the export can be trusted.
"""

from __future__ import annotations

import logging
import os

from wasmtime import Engine, WasmtimeError
from wasmtime.component import Component

from . import _body_adapter, _memory_probe
from ._component_binary import Unadaptable
from .errors import InvalidComponent

log = logging.getLogger("edgefn.wasm")


def adapting_bodies() -> bool:
    """Bodies cross as latin-1 strings through `_body_adapter` unless EDGEFN_NO_BODY_ADAPTER is set
    (to compare, or should a component not work inside the wrapper)."""
    return not os.environ.get("EDGEFN_NO_BODY_ADAPTER")


def cache_settings() -> str:
    """What the compiled artifact depends on beyond the guest's bytes and wasmtime's settings."""
    adapter = _body_adapter.VERSION if adapting_bodies() else "none"
    return f"bodies={adapter};probe={_memory_probe.VERSION}"


def _probed(data: bytes, name: str) -> bytes | None:
    try:
        return _memory_probe.add_probe(data)
    except _memory_probe.ReservedExport as exc:
        raise InvalidComponent(f"{name}: {exc}") from exc
    except (Unadaptable, WasmtimeError, IndexError, UnicodeDecodeError) as exc:
        log.info("%s: no Max Memory Used for it (no memory probe): %s", name, str(exc).splitlines()[0])
        return None


def _compile(engine: Engine, data: bytes, name: str) -> Component:
    component = _body_adapter.compile_adapted(engine, data, name) if adapting_bodies() else None
    return component or Component(engine, data)


def compile_guest(engine: Engine, data: bytes, name: str) -> Component:
    """Raises InvalidComponent if the guest does not compile as it is either."""
    probed = _probed(data, name)
    if probed is not None:
        try:
            return _compile(engine, probed, name)
        except WasmtimeError as exc:
            log.warning("%s: the memory probe does not fit it: %s", name, str(exc).splitlines()[0])
    try:
        return _compile(engine, data, name)
    except WasmtimeError as exc:
        raise InvalidComponent(f"{name}: does not compile: {str(exc).splitlines()[0]}") from exc
