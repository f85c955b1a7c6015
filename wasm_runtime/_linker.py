"""Builds a Linker for a component from what it imports.

Every import instance (`wasi:http/types@0.2.9`, `wasi:io/poll@0.2.0`, ...) is defined from the
same Python implementation, whatever its 0.2.x version. Each function is defined through the C
crossing (`_crossing`) with a value plan made from its actual type, so the host code sees
canonical values (`_canon`) and wasmtime-py's per-type tagging rules never reach it. Imports
without an implementation trap with their own name when called: the component still links, and
a guest that reaches for the filesystem learns what it touched.

A linker is made in two steps: `import_plan` reads the component's import types into plain
tuples (names and value plans), and `build_linker` defines them. Reading the types through
wasmtime-py is most of the cost (44 of 50 ms for a componentize-py guest's 279 imported functions,
docs/performance.md), so the runtime keeps each component's plan beside its compiled artifact
(`dump_plan`, `load_plan`) and shares one linker among components whose plans are equal: the
plan is everything a linker is made from.
"""

from __future__ import annotations

import hashlib
import logging
import marshal
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

from . import _crossing, _hostcall
from ._canon import HostResource
from ._context import HostAbort, current, guest_trap
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
    invocation: a WasmtimeError (the guest asked for what it may not have) goes to the function's
    log, an abort (timeout, cancellation, exit) ends the guest as such, anything else is a host
    bug, logged, that the runtime reports as a failed invocation."""

    def on_error(exc: BaseException) -> str:
        i = current.inv
        if isinstance(exc, WasmtimeError):  # the guest asked for what it may not have (guest_trap)
            if i is not None:
                i.emit_log("runtime", str(exc))
            return str(exc)
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
        raise guest_trap(f"{where} is not available in the edgefn sandbox")

    return trap


# One import instance: its name, and each item's name with its function's signature (the value
# plans of its parameters and result), or None for a resource.
InstancePlan = tuple[str, tuple[tuple[str, "_crossing.Signature | None"], ...]]
ImportPlan = tuple[InstancePlan, ...]

# Names the plan format. Change PLAN_VERSION with any change to what `import_plan` records or to
# how `_crossing.plan_of` maps a type, so that plans kept on disk by older code are read again.
PLAN_VERSION = 1
PLAN_FORMAT = hashlib.sha256(
    repr((PLAN_VERSION, marshal.version, sorted(_hostcall.KINDS.items()), sorted(LATIN1_STRINGS))).encode()
).hexdigest()[:16]


def import_plan(engine: Engine, component: Component) -> ImportPlan:
    plan = []
    for iname, ext in component.type.imports(engine).items():
        ity = ext.ty
        if not isinstance(ity, ComponentInstanceType):
            raise WasmtimeError(f"unsupported import {iname}: not an interface")
        plan.append((iname, instance_items(engine, VERSION.sub("", iname), ity)))
    return tuple(plan)


def instance_items(
    engine: Engine, iface: str, ity: ComponentInstanceType
) -> tuple[tuple[str, _crossing.Signature | None], ...]:
    latin1 = iface in LATIN1_STRINGS
    items: list[tuple[str, _crossing.Signature | None]] = []
    for name, item in ity.exports(engine).items():
        ty = item.ty
        if isinstance(ty, ResourceType):
            items.append((name, None))
        elif isinstance(ty, FuncType):
            items.append((name, _crossing.signature(ty, latin1)))
    return tuple(items)


def build_linker(engine: Engine, plan: ImportPlan) -> Linker:
    _crossing.install()
    linker = Linker(engine)
    with linker.root() as root:
        for iname, items in plan:
            iface = VERSION.sub("", iname)
            with root.add_instance(iname) as inst:
                _define(inst, iface, IMPLS.get(iface, {}), items)
    return linker


def _define(
    inst: LinkerInstance,
    iface: str,
    impls: dict[str, Any],
    items: tuple[tuple[str, _crossing.Signature | None], ...],
) -> None:
    for name, sig in items:
        if sig is None:
            _crossing.add_resource(inst, name, ResourceType.host(resource_id(name)), _dtor)
            continue
        impl = impls.get(name) or (
            method_name(name) if iface.startswith(("wasi:http/", "wasi:io/")) else None
        )
        where = f"{iface}#{name}"
        _crossing.add_func(inst, name, impl or _unavailable(where), sig, _on_error(where))


def dump_plan(plan: ImportPlan) -> bytes:
    """`marshal`, which keeps tuples as tuples and reads a plan back in microseconds. It trusts
    what it reads, as does the compiled artifact beside it, which is native code."""
    return marshal.dumps((PLAN_FORMAT, plan))


def load_plan(data: bytes) -> ImportPlan | None:
    """The plan `dump_plan` wrote, or None when it is not one of this format (older code wrote
    it, or it is damaged): then the caller reads the types again."""
    try:
        doc = marshal.loads(data)
    except (EOFError, ValueError, TypeError):
        return None
    if not (isinstance(doc, tuple) and len(doc) == 2 and doc[0] == PLAN_FORMAT and isinstance(doc[1], tuple)):
        return None
    return doc[1]  # type: ignore[no-any-return]
