"""Instance slots: a few places where fresh instances are made with their memory already mapped.

A fresh instance per request (`instance_reuse = 0`) costs, beside its guest's first run, the
kernel's work on its memory: every page its heap grows into is faulted in and zeroed, and all of it
is unmapped again when the instance is torn down (with TLB shootdowns to the other core). perf of a
one-worker gateway serving a fresh hello put the kernel at 43 % of the process's CPU (December
2026). wasmtime's pooling allocator maps each slot's memory once and, with
`linear_memory_keep_resident`, resets the first bytes past a memory's image with memset and keeps
them, rather than giving them back and faulting them in again. A fresh hello's `Runtime.invoke` took
3.3-3.9 ms without and 2.0-2.7 ms with 16 MiB kept (bench.wasm_inproc, alternating, 2026-12-03); 8 MiB
gained nothing (a componentize-py guest's heap grows past that in its first run), 32 no more than 16.

What a used slot keeps resident it keeps for the life of the process, so the slots are few and
their number is the ceiling (`[node] instance_slots`; one connection needs two: the instance serving
and the one made ahead for the next request). An instance that finds every slot taken, or one that
will serve more than one request (where its memory's setting up is paid once), is made as before,
with mappings of its own. A pooling allocator cannot hand out anything but its slots, so the slots
have an engine of their own: a component is deserialized into it from the same compiled artifact
(the allocator does not change compiled code; the file's pages are shared), and wasmtime checks
there whether one instance of it fits a slot.
"""

from __future__ import annotations

import threading
from typing import Any

from wasmtime import Config, Engine, Store
from wasmtime import _ffi as ffi

DEFAULT_SLOTS = 4
KEEP_RESIDENT = 16 << 20  # of each memory, past its image (see above)
TABLE_KEEP_RESIDENT = 1 << 20  # more than a table of 20,000 elements (wasmtime's limit a slot) needs
# What one slot holds: a component instance, and the core instances, memories and tables of
# one. Every memory place once used keeps up to KEEP_RESIDENT, so these make the ceiling
# (count * MEMORIES_PER_SLOT * KEEP_RESIDENT, beside the small tables and instance state), not
# only the count. The components edgefn builds
# have 2 memories (the guest's, and the body adapter's, which holds a chunk), 18 core instances
# (componentize-py) or 8 (componentize-js) and 2 tables; a component that needs more is refused as
# it is loaded into the slots' engine, and its instances are made as before.
CORE_INSTANCES_PER_SLOT = 32
MEMORIES_PER_SLOT = 2
TABLES_PER_SLOT = 4
MAX_MEMORY = 4 << 30  # a 32-bit memory's whole range: `memory_mb` caps it per store


class InstanceSlots:
    """The slots' engine and how many slots are free. `count = 0`: no slots, no engine."""

    def __init__(self, config: Config, count: int) -> None:
        if count < 0:
            raise ValueError(f"instance slots must be >= 0, not {count}")
        self.count = count
        self.engine: Engine | None = None
        self.made = 0  # stores made in a slot since start (for tests and the runtime's stats)
        self._free = count
        self._lock = threading.Lock()
        if count:
            _pooling(config, count)
            self.engine = Engine(config)

    @property
    def in_use(self) -> int:
        with self._lock:
            return self.count - self._free

    def store(self) -> Store | None:
        """A store whose instance takes a slot, or None if every slot is taken (or there are none)."""
        if self.engine is None:
            return None
        with self._lock:
            if self._free == 0:
                return None
            self._free -= 1
            self.made += 1
        try:
            return SlotStore(self.engine, self)
        except BaseException:
            self.give_back()
            raise

    def give_back(self) -> None:
        with self._lock:
            self._free += 1


class SlotStore(Store):
    """A store in a slot: the slot is free again once wasmtime has freed the store, whether it was
    closed (a spent instance) or collected (one dropped from a pool)."""

    def __init__(self, engine: Engine, slots: InstanceSlots) -> None:
        super().__init__(engine)
        self._slots = slots

    def _delete(self, ptr: Any) -> None:
        try:
            super()._delete(ptr)
        finally:
            self._slots.give_back()


def _pooling(config: Config, count: int) -> None:
    settings = {
        "total_component_instances": count,
        "total_core_instances": count * CORE_INSTANCES_PER_SLOT,
        "max_core_instances_per_component": CORE_INSTANCES_PER_SLOT,
        "total_memories": count * MEMORIES_PER_SLOT,
        "max_memories_per_component": MEMORIES_PER_SLOT,
        "total_tables": count * TABLES_PER_SLOT,
        "max_tables_per_component": TABLES_PER_SLOT,
        "max_memory_size": MAX_MEMORY,
        "linear_memory_keep_resident": KEEP_RESIDENT,
        "table_keep_resident": TABLE_KEEP_RESIDENT,
    }
    pool = ffi.wasmtime_pooling_allocation_config_new()
    try:
        for name, value in settings.items():
            getattr(ffi, f"wasmtime_pooling_allocation_config_{name}_set")(pool, value)
        ffi.wasmtime_pooling_allocation_strategy_set(config.ptr(), pool)
    finally:
        ffi.wasmtime_pooling_allocation_config_delete(pool)


__all__ = ["DEFAULT_SLOTS", "InstanceSlots", "SlotStore"]
