"""Builds a Linker for one component from what it imports.

Every import instance (`wasi:http/types@0.2.9`, `wasi:io/poll@0.2.0`, ...) is defined from the
same Python implementation, whatever its 0.2.x version. Each function gets its canonical value
converters compiled from its actual type, so wasmtime-py's per-type tagging rules never leak into
the host code. Imports without an implementation trap with their own name when called: the
component still links, and a guest that reaches for the filesystem learns what it touched.
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

from ._canon import compile_lift, compile_lower
from ._context import HostAbort, current, inv, table
from ._wasi import IMPLS, method_impl
from .ids import BY_NAME, RID

log = logging.getLogger("edgefn.wasm")
VERSION = re.compile(r"@0\.2\.\d+$")
_dynamic_ids: dict[str, int] = {}


def resource_id(name: str) -> int:
    rid = BY_NAME.get(name)
    if rid is None:
        rid = _dynamic_ids.setdefault(name, RID.DYNAMIC_BASE + len(_dynamic_ids))
    return rid


def _dtor(_store: Any, rep: int) -> None:
    state = current.store
    if state is None:
        return
    obj = state.table.pop(rep)
    if obj is None:
        return
    try:
        obj.on_drop()
    except Exception:  # raising here would leak into wasmtime-py's process-wide last exception
        log.exception("dropping %s failed", type(obj).__name__)


def _wrap(iface: str, name: str, impl: Callable[..., Any], fty: FuncType) -> Callable[..., Any]:
    lifts = [compile_lift(t, table) for _, t in fty.params]
    lower = compile_lower(fty.result, table)
    where = f"{iface}#{name}"
    lifting = any(lifts)

    def host(store: Any, *args: Any) -> Any:
        try:
            if lifting:
                args = tuple(a if f is None else f(store, a) for f, a in zip(lifts, args, strict=True))
            result = impl(*args)
            return result if lower is None else lower(result)
        except WasmtimeError:
            raise
        except HostAbort as exc:
            i = current.inv
            if i is not None and i.abort is None:
                i.abort = exc
            raise WasmtimeError(f"{where}: {exc}") from None
        except Exception as exc:
            i = current.inv
            if i is not None and i.host_error is None:
                i.host_error = exc
            log.exception("host function %s failed", where)
            raise WasmtimeError(f"{where}: {type(exc).__name__}: {exc}") from None

    return host


def _unavailable(where: str) -> Callable[..., Any]:
    def trap(_store: Any, *_args: Any) -> Any:
        i = inv()
        i.emit_log("runtime", f"{where} is not available in the edgefn sandbox")
        raise WasmtimeError(f"{where} is not available in the edgefn sandbox")

    return trap


def build_linker(engine: Engine, component: Component) -> Linker:
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
            inst.add_resource(name, ResourceType.host(resource_id(name)), _dtor)
        elif isinstance(ty, FuncType):
            impl = impls.get(name) or (
                method_impl(name) if iface.startswith(("wasi:http/", "wasi:io/")) else None
            )
            if impl is None:
                inst.add_func(name, _unavailable(f"{iface}#{name}"))
            else:
                inst.add_func(name, _wrap(iface, name, impl, ty))
