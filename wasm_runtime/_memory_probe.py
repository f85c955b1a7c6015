"""How much linear memory a guest has grown to: the "Max Memory Used" of its REPORT line.

wasmtime 49's C API shows a component's functions and nothing else: not its core memories, and it
has no callback when a memory grows. So the component is given one more export before it is
compiled, `edgefn-memory-pages`, that answers the summed size in 64 KiB pages of every core memory
in its top-level index space (each an alias of a core instance's memory export):

    (core module (import "m" "0" (memory 0)) ... (func (export "pages") (result i32) memory.size ...))
    (core instance $mems (export "0" (memory M0)) ...)
    (core instance $probe (instantiate <that module> (with "m" (instance $mems))))
    (func (canon lift (core func $probe "pages")))  exported as `edgefn-memory-pages`

These are sections appended after the guest's last; nothing of the guest changes. A linear memory
never shrinks, so its size once the handler has returned is the most it used, over every request
the instance has served (as Lambda's figure is over the life of an execution environment).
The name is reserved: a component that exports it itself is refused, so that a compiled artifact
with the export always got it from here.
"""

from __future__ import annotations

from wasmtime import wat2wasm

from ._component_binary import (
    ALIAS,
    CANON,
    CORE_FUNC,
    CORE_INSTANCE,
    CORE_INSTANCE_SORT,
    CORE_MEMORY,
    CORE_MODULE,
    CORE_MODULE_SORT,
    EXPORT,
    FUNC,
    TYPE,
    TYPE_SORT,
    Unadaptable,
    export_names,
    index_spaces,
    rewriter_version,
    section,
    string,
    uleb,
    vec,
)

EXPORT_NAME = "edgefn-memory-pages"
VERSION = rewriter_version("_memory_probe.py")
PAGE = 1 << 16


class ReservedExport(Exception):
    """The component exports a name the runtime keeps for itself."""


def _module(memories: int) -> bytes:
    imports = " ".join(f'(import "m" "{k}" (memory $m{k} 0))' for k in range(memories))
    total = "(memory.size $m0)"
    for k in range(1, memories):
        total = f"(i32.add {total} (memory.size $m{k}))"
    return wat2wasm(f'(module {imports} (func (export "pages") (result i32) {total}))')


def add_probe(data: bytes) -> bytes:
    """The component with `edgefn-memory-pages` exported. Raises Unadaptable when its layout is
    not one this can count, ReservedExport when it exports the name already."""
    if EXPORT_NAME in export_names(data):  # read first: it must hold even if counting fails
        raise ReservedExport(f"the export name {EXPORT_NAME!r} is reserved for the runtime")
    spaces = index_spaces(data)
    if not spaces.memories:
        raise Unadaptable("the component has no core memory at its top level")
    module = spaces.add(CORE_MODULE_SORT)
    memories = spaces.add(CORE_INSTANCE_SORT)
    probe = spaces.add(CORE_INSTANCE_SORT)
    pages = spaces.add(CORE_FUNC)
    func_type = spaces.add(TYPE_SORT)
    func = spaces.add(FUNC)
    inline = vec(
        [string(str(k)) + bytes([CORE_MEMORY & 0xFF]) + uleb(m) for k, m in enumerate(spaces.memories)]
    )
    instantiate = uleb(module) + vec([string("m") + bytes([CORE_INSTANCE_SORT & 0xFF]) + uleb(memories)])
    return b"".join(
        [
            data,
            section(CORE_MODULE, _module(len(spaces.memories))),
            section(CORE_INSTANCE, vec([b"\x01" + inline, b"\x00" + instantiate])),
            section(ALIAS, vec([bytes([0x00, CORE_FUNC & 0xFF, 0x01]) + uleb(probe) + string("pages")])),
            section(TYPE, vec([b"\x40" + vec([]) + b"\x00\x79"])),  # func () -> u32
            section(CANON, vec([b"\x00\x00" + uleb(pages) + vec([]) + uleb(func_type)])),
            section(EXPORT, vec([b"\x00" + string(EXPORT_NAME) + bytes([FUNC]) + uleb(func) + b"\x00"])),
        ]
    )
