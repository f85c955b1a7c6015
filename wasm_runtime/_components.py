"""Compiled components: the compile cache on disk, the components loaded from it, and the linkers
they share.

A component is compiled once per node and engine settings (`data_dir/compiled/SHA256-KEY.cwasm`,
its import plan beside it); a restart deserializes the artifact and builds its linker from the
plan, and components whose plans are equal share one linker. With instance slots (_slots.py) each
component is deserialized a second time, into the slots' engine.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import re
import threading
import time
import weakref
from dataclasses import dataclass
from pathlib import Path

import cachetools
from wasmtime import Engine, WasmtimeError
from wasmtime.component import Component, ComponentInstanceType, FuncType, Linker

from . import _body_adapter, _crossing, _memory_probe
from ._compile import compile_guest
from ._linker import ImportPlan, build_linker, dump_plan, import_plan, load_plan
from ._streams import MAX_IO
from .errors import ComponentChanged, InvalidComponent

log = logging.getLogger("edgefn.wasm")

COMPONENT_MAGIC = b"\x00asm\x0d\x00\x01\x00"
HANDLER = re.compile(r"^wasi:http/incoming-handler@0\.2\.\d+$")


@dataclass(eq=False)
class LoadedComponent:
    """A compiled component with its linker; shared by every invocation of it (and the linker by
    every component whose imports are the same: `Components._linker_for`)."""

    name: str
    sha256: str
    component: Component
    linker: Linker
    handler: str
    handle: _crossing.ExportPlan
    from_cache: bool = False
    load_ms: float = 0.0
    reuse_ok: bool = True
    io_max: int = MAX_IO  # see Invocation.io_max
    memory_probe: _crossing.ExportPlan | None = None  # see _memory_probe
    slotted: SlotCopy | None = None  # see _slots.py


@dataclass(frozen=True, eq=False)
class SlotCopy:
    """A loaded component again, in the instance slots' engine (export indices are a
    component's own)."""

    component: Component
    linker: Linker
    handle: _crossing.ExportPlan
    memory_probe: _crossing.ExportPlan | None


def entry_points(
    name: str, component: Component, engine: Engine
) -> tuple[str, _crossing.ExportPlan, _crossing.ExportPlan | None]:
    """The wasi:http handler's name, how to call its `handle`, and the memory probe if any."""
    exports = component.type.exports(engine)
    handler = next((n for n in exports if HANDLER.match(n)), None)
    if handler is None:
        raise InvalidComponent(f"{name}: does not export wasi:http/incoming-handler@0.2.x")
    inst_index = component.get_export_index(handler)
    handle_index = component.get_export_index("handle", inst_index) if inst_index is not None else None
    handler_type = exports[handler].ty
    handle_type = (
        handler_type.exports(engine).get("handle")
        if isinstance(handler_type, ComponentInstanceType)
        else None
    )
    if handle_index is None or handle_type is None or not isinstance(handle_type.ty, FuncType):
        raise InvalidComponent(f"{name}: {handler} has no `handle` function")
    probe_index = component.get_export_index(_memory_probe.EXPORT_NAME)
    probe_type = exports[_memory_probe.EXPORT_NAME].ty if probe_index is not None else None
    probe = None
    if probe_index is not None and isinstance(probe_type, FuncType):
        probe = _crossing.export_plan(probe_index, probe_type)
    return handler, _crossing.export_plan(handle_index, handle_type.ty), probe


def hash_file(path: Path) -> str:
    """A component file's sha256, the compile cache's key, for a loading thread (never the event
    loop: on its thread this held up every request of a node loading a function). Read in small
    pieces into one buffer (`hashlib.file_digest`), not whole into a new one: in a freshly forked
    worker, reading and hashing an 18 MB guest took 27 ms whole, half of it the new buffer's
    page faults and copy, and 16 ms this way. (A memory map of the file was 14 ms, but a file
    truncated while mapped kills the process with SIGBUS.)"""
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _read_checked(path: Path, sha: str, name: str) -> bytes:
    """The bytes of a component about to be compiled, which must hash to `sha`: the name of its
    blob, or the hash its load began with (the file was replaced in between)."""
    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() != sha:
        raise ComponentChanged(f"{name}: its bytes do not hash to the expected sha256 {sha[:12]}")
    return data


def _write_whole(path: Path, data: bytes | bytearray) -> None:
    """A file of the compile cache, written whole or not at all: another process or thread may be
    loading it. The temporary beside it is named by process and thread; one a crash leaves is the
    blob sweep's (registry_sweep.py, by its age)."""
    tmp = path.with_suffix(f".tmp{os.getpid()}.{threading.get_ident()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


class Components:
    """The components a runtime has loaded, by sha256 (an LRU of `cache_size`), compiled into
    `compiled_dir` for `engine` (whose settings `engine_key` names) and, when there are instance
    slots, loaded into `slots_engine` too."""

    def __init__(
        self,
        engine: Engine,
        engine_key: str,
        slots_engine: Engine | None,
        compiled_dir: Path,
        cache_size: int,
    ) -> None:
        self.engine = engine
        self.engine_key = engine_key
        self.slots_engine = slots_engine
        self.compiled_dir = compiled_dir
        self._cache: cachetools.LRUCache[str, LoadedComponent] = cachetools.LRUCache(cache_size)
        self._load_locks: dict[str, asyncio.Lock] = {}
        # linkers by import plan and engine (is it the main one), alive while a loaded component
        # uses them (see _linker_for)
        self._linkers: weakref.WeakValueDictionary[tuple[ImportPlan, bool], Linker] = (
            weakref.WeakValueDictionary()
        )
        self._linkers_lock = threading.Lock()

    def validate(self, wasm_bytes: bytes) -> None:
        """A cheap check before deploy: a component (not a core module) exporting the handler."""
        if wasm_bytes[:4] != b"\x00asm":
            raise InvalidComponent("not a WebAssembly binary")
        if wasm_bytes[:8] != COMPONENT_MAGIC:
            raise InvalidComponent(
                "a core WebAssembly module, not a component (build it with componentize-py)"
            )
        if b"wasi:http/incoming-handler@0.2." not in wasm_bytes:
            raise InvalidComponent("the component does not export wasi:http/incoming-handler@0.2.x")

    async def load(self, wasm: Path, *, sha256: str | None = None) -> LoadedComponent:
        """`sha256`: the file's hash when the caller knows it (a registry blob is named by its
        hash, checked when it was stored); then a compiled artifact is used without reading the
        file at all, which on a restart was most of a function's load (read 17-29 ms and hash
        13-19 ms of an 18 MB Python guest, against 3-8 ms to deserialize)."""
        sha = sha256 if sha256 is not None else await asyncio.to_thread(hash_file, Path(wasm))
        hit = self._cache.get(sha)
        if hit is not None:
            return hit
        lock = self._load_locks.setdefault(sha, asyncio.Lock())
        async with lock:
            hit = self._cache.get(sha)
            if hit is None:
                hit = await asyncio.to_thread(self._load_sync, Path(wasm), sha)
                self._cache[sha] = hit
        return hit

    def _load_sync(self, path: Path, sha: str) -> LoadedComponent:
        """From the compiled artifact of `sha` when there is one (compiled from bytes that were
        validated then), else compiled from the file's bytes, checked against `sha`."""
        name = path.stem
        cwasm = self.compiled_dir / f"{sha}-{self.engine_key}.cwasm"
        t0 = time.perf_counter()
        component = None
        from_cache = False
        if cwasm.exists():
            try:
                component = Component.deserialize_file(self.engine, str(cwasm))
                from_cache = True
            except WasmtimeError as exc:
                log.warning("discarding unusable compiled artifact %s: %s", cwasm, exc)
        if component is None:
            data = _read_checked(path, sha, name)
            self.validate(data)
            component = compile_guest(self.engine, data, name)
            self.compiled_dir.mkdir(parents=True, exist_ok=True)
            _write_whole(cwasm, component.serialize())
        ms = (time.perf_counter() - t0) * 1000
        handler, handle, probe = entry_points(name, component, self.engine)
        try:
            plan = self._import_plan(component, cwasm)
            linker = self._linker_for(plan, self.engine)
        except WasmtimeError as exc:
            raise InvalidComponent(f"{name}: cannot link its imports: {exc}") from exc
        t1 = time.perf_counter()
        slotted = self._load_into_slots(name, cwasm, plan)
        ms += (time.perf_counter() - t1) * 1000  # a second deserialize: part of its load
        adapted = any(iname == _body_adapter.INTERFACE for iname, _ in plan)
        if probe is None:
            log.info("%s: its REPORT lines will have no Max Memory Used (no memory probe)", name)
        if from_cache:
            log.info("loaded %s sha256=%s from cache in %.0f ms", name, sha[:12], ms)
        else:
            log.info("compiled %s sha256=%s in %.1f s", name, sha[:12], ms / 1000)
        return LoadedComponent(
            name,
            sha,
            component,
            linker,
            handler,
            handle,
            from_cache,
            ms,
            io_max=_body_adapter.IO_MAX if adapted else MAX_IO,
            memory_probe=probe,
            slotted=slotted,
        )

    def _load_into_slots(self, name: str, cwasm: Path, plan: ImportPlan) -> SlotCopy | None:
        """The component again, in the instance slots' engine (None: there are no slots, or one
        of its instances does not fit a slot, which wasmtime says as it deserializes)."""
        engine = self.slots_engine
        if engine is None:
            return None
        try:
            component = Component.deserialize_file(engine, str(cwasm))
        except WasmtimeError as exc:
            log.info("%s: fresh instances made without instance slots: %s", name, str(exc).splitlines()[0])
            return None
        _, handle, probe = entry_points(name, component, engine)
        return SlotCopy(component, self._linker_for(plan, engine), handle, probe)

    def _import_plan(self, component: Component, cwasm: Path) -> ImportPlan:
        """What the component's linker is made from, kept beside its compiled artifact: read from
        its types at its first load on this node, from the file at every later one."""
        kept = cwasm.with_suffix(".imports")
        try:
            plan = load_plan(kept.read_bytes())
        except OSError:  # none kept yet (or unreadable): read the types
            plan = None
        if plan is not None:
            return plan
        plan = import_plan(self.engine, component)
        try:
            _write_whole(kept, dump_plan(plan))
        except OSError as exc:  # the next load reads the types again
            log.warning("could not keep the import plan of %s: %s", cwasm.name, exc)
        return plan

    def _linker_for(self, plan: ImportPlan, engine: Engine) -> Linker:
        """One linker for every loaded component with this import plan (a guest's new version,
        functions built with the same tools) in `engine`: equal plans make equal linkers."""
        key = (plan, engine is self.engine)
        with self._linkers_lock:
            linker = self._linkers.get(key)
        if linker is None:
            built = build_linker(engine, plan)
            with self._linkers_lock:
                linker = self._linkers.setdefault(key, built)
        return linker
