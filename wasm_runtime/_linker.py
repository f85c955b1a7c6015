"""Builds a Linker for one component from what it imports.

Every import instance (`wasi:http/types@0.2.9`, `wasi:io/poll@0.2.0`, ...) is defined from the
same Python implementation, whatever its 0.2.x version. Each function is defined through the C
crossing (`_crossing`) with a value plan made from its actual type, so the host code sees
canonical values (`_canon`) and wasmtime-py's per-type tagging rules never reach it. Imports
without an implementation trap with their own name when called: the component still links, and
a guest that reaches for the filesystem learns what it touched.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Any

from wasmtime import Engine, WasmtimeError
from wasmtime.component import (
    Component,
    ComponentInstanceType,
    FuncType,
    Linker,
    LinkerInstance,
    ResourceType,
)

from . import _crossing
from ._canon import HostResource
from ._context import HostAbort, current, inv
from ._wasi import IMPLS, LATIN1_STRINGS, method_name
from .ids import BY_NAME, RID

log = logging.getLogger("edgefn.wasm")
VERSION = re.compile(r"@0\.2\.\d+$")
_dynamic_ids: dict[str, int] = {}


def resource_id(name: str) -> int:
    rid = BY_NAME.get(name)
    if rid is None:
        rid = _dynamic_ids.setdefault(name, RID.DYNAMIC_BASE + len(_dynamic_ids))
    return rid


def _dtor(obj: HostResource) -> None:
    """The guest dropped its last handle of `obj`, whose class has an `on_drop` of its own
    (_hostcall.c has taken it out of the store's table)."""
    try:
        obj.on_drop()
    except Exception:  # a drop cannot fail the guest: the handle is gone either way
        log.exception("dropping %s failed", type(obj).__name__)


def _on_error(where: str) -> Callable[[BaseException], str]:
    """The trap message for an exception out of a host function, after noting it on the
    invocation: an abort (timeout, cancellation, exit) ends the guest as such, anything else is a
    host bug, logged, that the runtime reports as a failed invocation."""

    def on_error(exc: BaseException) -> str:
        if isinstance(exc, WasmtimeError):
            return str(exc)
        i = current.inv
        if isinstance(exc, HostAbort):
            if i is not None and i.abort is None:
                i.abort = exc
            return f"{where}: {exc}"
        if i is not None and i.host_error is None and isinstance(exc, Exception):
            i.host_error = exc
        log.error("host function %s failed", where, exc_info=exc)
        return f"{where}: {type(exc).__name__}: {exc}"

    return on_error


def _unavailable(where: str) -> Callable[..., Any]:
    def trap(*_args: Any) -> Any:
        i = inv()
        i.emit_log("runtime", f"{where} is not available in the edgefn sandbox")
        raise WasmtimeError(f"{where} is not available in the edgefn sandbox")

    return trap


def build_linker(engine: Engine, component: Component) -> Linker:
    _crossing.install()
    linker = Linker(engine)
    imports = component.type.imports(engine)
    with linker.root() as root:
        for iname, ext in imports.items():
            ity = ext.ty
            if not isinstance(ity, ComponentInstanceType):
                raise WasmtimeError(f"unsupported import {iname}: not an interface")
            iface = VERSION.sub("", iname)
            impls = IMPLS.get(iface, {})
            with root.add_instance(iname) as inst:
                _define(engine, inst, iface, impls, ity)
    return linker


def _define(
    engine: Engine, inst: LinkerInstance, iface: str, impls: dict[str, Any], ity: ComponentInstanceType
) -> None:
    for name, item in ity.exports(engine).items():
        ty = item.ty
        if isinstance(ty, ResourceType):
            _crossing.add_resource(inst, name, ResourceType.host(resource_id(name)), _dtor)
        elif isinstance(ty, FuncType):
            impl = impls.get(name) or (
                method_name(name) if iface.startswith(("wasi:http/", "wasi:io/")) else None
            )
            where = f"{iface}#{name}"
            _crossing.add_func(
                inst, name, impl or _unavailable(where), ty, _on_error(where), latin1=iface in LATIN1_STRINGS
            )
