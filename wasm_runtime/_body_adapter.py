"""Body bytes cross between guest and host as latin-1 strings: one block copy, not one value per byte.

wasmtime 49's C API hands a host function every byte of a `list<u8>` as its own 32-byte value
and type-checks each one (docs/performance-wasm-calls.md): 45-90 ms per MiB however fast the
Python side is. A `string` crosses as one buffer. So when a component is compiled, its
`wasi:io/streams` import is given to it through a small adapter component composed around it:

    wrapper
      imports: the guest's own imports, verbatim, and `edgefn:io/bytes`
      adapter  <- every type and function of the host's wasi:io/streams, edgefn:io/bytes;
                  exports all of wasi:io/streams again, with its own write,
                  blocking-write-and-flush, read and blocking-read
      guest    <- every import as it was, but wasi:io/streams is the adapter's instance
      exports: the guest's exports

A guest's `list<u8>` reaches the adapter's memory by wasmtime's own compiled copy between the two
components; the adapter passes (pointer, length) on to the host as a string in the component
model's `latin1+utf16` encoding, which are the same bytes. Reads come back the same way. wasmtime
hands such a string to the host as UTF-8; the C crossing turns it into the bytes of its code
points in one pass and back (`_crossing.plan_of(..., latin1=True)`), so the host sees bytes.

Nothing about the guest changes: the wrapper's imports are the guest's own import sections, copied
(_component_binary reads how far they go), and the guest is nested whole. A component this cannot
take apart is compiled as it is (`compile_adapted` returns None and says why in the log).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from wasmtime import Engine, WasmtimeError, wat2wasm
from wasmtime.component import Component, ComponentInstanceType, FuncType

from ._component_binary import (
    ALIAS,
    COMPONENT,
    COMPONENT_SORT,
    EXPORT,
    FUNC,
    IMPORT,
    INSTANCE,
    INSTANCE_SORT,
    PREAMBLE,
    TYPE,
    TYPE_SORT,
    Layout,
    Unadaptable,
    read_layout,
    rewriter_version,
    section,
    string,
    uleb,
    vec,
)

log = logging.getLogger("edgefn.wasm")

INTERFACE = "edgefn:io/bytes"
# Reads return, and check-write permits, up to this much at once for a guest inside the adapter: a
# string crossing costs per byte, not per call, but the fewer calls the less Python per MiB
# (a 20 MB stream: 1 MiB moved ~1.4x as fast as 64 KiB). It is the output sink's capacity too.
IO_MAX = 1 << 20

# Part of the compile cache's key: a change to the code that writes the wrapper (this file and the
# binary encoding) must not reuse artifacts it made before.
VERSION = rewriter_version("_body_adapter.py")

WRITES = ("[method]output-stream.write", "[method]output-stream.blocking-write-and-flush")
READS = ("[method]input-stream.read", "[method]input-stream.blocking-read")
# the adapter's export and the host function for each, by the streams function it replaces
SHORT = {
    WRITES[0]: "write",
    WRITES[1]: "blocking-write-and-flush",
    READS[0]: "read",
    READS[1]: "blocking-read",
}


# the adapter ---------------------------------------------------------------------------------

# wasi:io/streams 0.2 by function, with {os} {is} {se} {poll} for the types: the adapter imports
# the ones it passes through and exports all, as the guest imports them.
_IN, _OUT = '(param "self" (borrow {is}))', '(param "self" (borrow {os}))'
_LEN, _BYTES, _SRC = '(param "len" u64)', '(param "contents" (list u8))', '(param "src" (borrow {is}))'
_DONE, _COUNT = "(result (result (error {se})))", "(result (result u64 (error {se})))"
_DATA, _POLLABLE = "(result (result (list u8) (error {se})))", "(result (own {poll}))"
SIGNATURES = {
    "[method]input-stream.read": f"{_IN} {_LEN} {_DATA}",
    "[method]input-stream.blocking-read": f"{_IN} {_LEN} {_DATA}",
    "[method]input-stream.skip": f"{_IN} {_LEN} {_COUNT}",
    "[method]input-stream.blocking-skip": f"{_IN} {_LEN} {_COUNT}",
    "[method]input-stream.subscribe": f"{_IN} {_POLLABLE}",
    "[method]output-stream.check-write": f"{_OUT} {_COUNT}",
    "[method]output-stream.write": f"{_OUT} {_BYTES} {_DONE}",
    "[method]output-stream.blocking-write-and-flush": f"{_OUT} {_BYTES} {_DONE}",
    "[method]output-stream.flush": f"{_OUT} {_DONE}",
    "[method]output-stream.blocking-flush": f"{_OUT} {_DONE}",
    "[method]output-stream.subscribe": f"{_OUT} {_POLLABLE}",
    "[method]output-stream.write-zeroes": f"{_OUT} {_LEN} {_DONE}",
    "[method]output-stream.blocking-write-zeroes-and-flush": f"{_OUT} {_LEN} {_DONE}",
    "[method]output-stream.splice": f"{_OUT} {_SRC} {_LEN} {_COUNT}",
    "[method]output-stream.blocking-splice": f"{_OUT} {_SRC} {_LEN} {_COUNT}",
}
RESOURCES = {"output-stream": "os", "input-stream": "is", "error": "err", "pollable": "poll"}
_FAST_WRITE = '(param "self" (borrow $os)) (param "contents" string) (result (result (error $se)))'
_FAST_READ = '(param "self" (borrow $is)) (param "len" u64) (result (result string (error $se)))'


def _moved(names: list[str]) -> tuple[list[str], list[str]]:
    """The adapter's own write and read functions for a streams import with these names."""
    return [SHORT[n] for n in names if n in WRITES], [SHORT[n] for n in names if n in READS]


def _sig(name: str, suffix: str) -> str:
    return SIGNATURES[name].format_map({t: f"${t}{suffix}" for t in ("os", "is", "se", "poll")})


def adapter_wat(items: list[tuple[str, int]]) -> str:
    """The adapter for a guest whose streams import has these items (name, sort): it exports all
    of them, passing the host's through except the functions in SHORT."""
    names = [n for n, _ in items]
    unknown = [n for n in names if n not in SIGNATURES and n not in RESOURCES and n != "stream-error"]
    if unknown or "stream-error" not in names or "error" not in names:
        raise Unadaptable(f"a wasi:io/streams this adapter does not know: {unknown or names}")
    resources = [n for n in names if n in RESOURCES]
    funcs = [n for n in names if n in SIGNATURES]
    writes, reads = _moved(funcs)
    drops = (["os"] if writes else []) + (["is"] if reads else [])
    lines = [f'(import "{r}" (type ${RESOURCES[r]} (sub resource)))' for r in resources]
    lines.append('(type $se-def (variant (case "last-operation-failed" (own $err)) (case "closed")))')
    lines.append('(import "stream-error" (type $se (eq $se-def)))')
    ident = {n: f"$f{k}" for k, n in enumerate(funcs)}
    lines += [f'(import "{n}" (func {ident[n]} {_sig(n, "")}))' for n in funcs if n not in SHORT]
    fast = [
        "(alias outer $adapter $se (type $se-outer))",
        '(export "stream-error" (type $se (eq $se-outer)))',
    ]
    if writes:
        fast.append("(alias outer $adapter $os (type $os))")
    if reads:
        fast.append("(alias outer $adapter $is (type $is))")
    fast += [f'(export "{w}" (func {_FAST_WRITE}))' for w in writes]
    fast += [f'(export "{r}" (func {_FAST_READ}))' for r in reads]
    lines.append(f'(import "fast" (instance $fast {" ".join(fast)}))')
    # A borrowed handle an export receives must be dropped before it returns.
    core_imports = [f'(import "fast" "{w}" (func ${w} (param i32 i32 i32 i32)))' for w in writes]
    core_imports += [f'(import "fast" "{r}" (func ${r} (param i32 i64 i32)))' for r in reads]
    core_imports += [f'(import "fast" "drop-{t}" (func $drop-{t} (param i32)))' for t in drops]
    core_funcs = [
        f"""(func (export "{w}") (param i32 i32 i32) (result i32)
              (call ${w} (local.get 0) (local.get 1) (local.get 2) (i32.const {RET}))
              (call $drop-os (local.get 0))
              (global.set $top (i32.const {HEAP}))
              (i32.const {RET}))"""
        for w in writes
    ]
    core_funcs += [
        f"""(func (export "{r}") (param i32 i64) (result i32)
              (global.set $top (i32.const {HEAP}))
              (call ${r} (local.get 0) (local.get 1) (i32.const {RET}))
              (call $drop-is (local.get 0))
              (i32.const {RET}))"""
        for r in reads
    ]
    lines += [
        "(core module $lib",
        '  (memory (export "memory") 1)',
        f'  (global $top (export "top") (mut i32) (i32.const {HEAP}))',
        f"  {_REALLOC})",
        "(core instance $lib (instantiate $lib))",
        '(alias core export $lib "memory" (core memory $mem))',
        '(alias core export $lib "realloc" (core func $realloc))',
    ]
    lines += [
        f'(core func $lower-{n} (canon lower (func $fast "{n}") (memory $mem) (realloc $realloc) '
        "string-encoding=latin1+utf16))"
        for n in writes + reads
    ]
    lines += [f"(core func $drop-{t} (canon resource.drop ${t}))" for t in drops]
    fast_instance = " ".join(
        [f'(export "{n}" (func $lower-{n}))' for n in writes + reads]
        + [f'(export "drop-{t}" (func $drop-{t}))' for t in drops]
    )
    lines += [
        "(core module $main",
        '  (import "lib" "top" (global $top (mut i32)))',
        *core_imports,
        *core_funcs,
        ")",
        '(core instance $main (instantiate $main (with "lib" (instance $lib))',
        f'  (with "fast" (instance {fast_instance}))))',
    ]
    lines += [
        f'(func {ident[n]} {_sig(n, "")} (canon lift (core func $main "{SHORT[n]}") '
        "(memory $mem) (realloc $realloc)))"
        for n in funcs
        if n in SHORT
    ]
    # exports: the types first, each named, then the functions ascribed the exported types
    lines += [f'(export ${RESOURCES[r]}-x "{r}" (type ${RESOURCES[r]}))' for r in resources]
    lines.append('(type $se-x-def (variant (case "last-operation-failed" (own $err-x)) (case "closed")))')
    lines.append('(export $se-x "stream-error" (type $se) (type (eq $se-x-def)))')
    lines += [f'(export "{n}" (func {ident[n]}) (func {_sig(n, "-x")}))' for n in funcs]
    body = "\n  ".join(lines)
    return f"(component $adapter\n  {body})\n"


RET = 16  # a call's result record (12 bytes)
HEAP = 1024  # where the bump allocator starts again for each call

# A bump allocator: a call's bytes live until the next call of the adapter. Every block is aligned
# to 8, the largest alignment the canonical ABI asks for: a latin1+utf16 string must start at an
# even address even when it is a list<u8> of odd length that was copied in.
_REALLOC = """(func (export "realloc") (param $old i32) (param $old-size i32) (param $align i32)
      (param $size i32) (result i32) (local $p i32) (local $end i32) (local $pages i32)
      (if (i32.and (i32.ne (local.get $old) (i32.const 0))
                   (i32.le_u (local.get $size) (local.get $old-size)))
        (then (return (local.get $old))))
      (local.set $p (i32.and (i32.add (global.get $top) (i32.const 7)) (i32.const -8)))
      (local.set $end (i32.add (local.get $p) (local.get $size)))
      (if (i32.lt_u (local.get $end) (local.get $p)) (then unreachable))
      (local.set $pages (i32.shr_u (i32.add (local.get $end) (i32.const 0xffff)) (i32.const 16)))
      (if (i32.lt_u (local.get $end) (i32.const 0xffff0000))
        (then (nop))
        (else (local.set $pages (i32.const 0x10000))))
      (if (i32.gt_u (local.get $pages) (memory.size))
        (then (if (i32.eq (memory.grow (i32.sub (local.get $pages) (memory.size))) (i32.const -1))
                (then unreachable))))
      (if (local.get $old)
        (then (memory.copy (local.get $p) (local.get $old) (local.get $old-size))))
      (global.set $top (local.get $end))
      (local.get $p))"""


# the wrapper ---------------------------------------------------------------------------------


def _alias_export(instance: int, name: str, sort: int) -> bytes:
    return bytes([sort, 0x00]) + uleb(instance) + string(name)


def _fast_instance_type(writes: list[str], reads: list[str], os_t: int, is_t: int, err_t: int) -> bytes:
    """`edgefn:io/bytes` as the wrapper imports it; the adapter declares the same in its text."""
    decls: list[bytes] = []
    local = 0

    def alias_outer(index: int) -> int:
        nonlocal local
        decls.append(b"\x02" + bytes([TYPE_SORT, 0x02]) + uleb(1) + uleb(index))
        local += 1
        return local - 1

    def deftype(body: bytes) -> int:
        nonlocal local
        decls.append(b"\x01" + body)
        local += 1
        return local - 1

    err = alias_outer(err_t)
    own_err = deftype(b"\x69" + uleb(err))
    variant = deftype(
        b"\x71"
        + vec(
            [
                string("last-operation-failed") + b"\x01" + uleb(own_err) + b"\x00",
                string("closed") + b"\x00\x00",
            ]
        )
    )
    decls.append(b"\x04\x00" + string("stream-error") + bytes([TYPE_SORT, 0x00]) + uleb(variant))
    se = local
    local += 1
    string_t = b"\x73"
    if writes:
        bo = deftype(b"\x68" + uleb(alias_outer(os_t)))
        res = deftype(b"\x6a\x00\x01" + uleb(se))
        fn = deftype(
            b"\x40" + vec([string("self") + uleb(bo), string("contents") + string_t]) + b"\x00" + uleb(res)
        )
        decls += [b"\x04\x00" + string(w) + bytes([FUNC]) + uleb(fn) for w in writes]
    if reads:
        bi = deftype(b"\x68" + uleb(alias_outer(is_t)))
        res = deftype(b"\x6a\x01" + string_t + b"\x01" + uleb(se))
        fn = deftype(
            b"\x40" + vec([string("self") + uleb(bi), string("len") + b"\x77"]) + b"\x00" + uleb(res)
        )
        decls += [b"\x04\x00" + string(r) + bytes([FUNC]) + uleb(fn) for r in reads]
    return b"\x42" + vec(decls)


def streams_import(engine: Engine, data: bytes, layout: Layout) -> tuple[str, list[tuple[str, int]]]:
    """The guest's wasi:io/streams import and its exports (name, sort), read by compiling only
    the guest's import sections: a component of types alone compiles in about a millisecond."""
    head = Component(engine, data[: layout.prefix_end])
    for name, ext in head.type.imports(engine).items():
        if name.startswith("wasi:io/streams@0.2.") and isinstance(ext.ty, ComponentInstanceType):
            items = [
                (item_name, FUNC if isinstance(item.ty, FuncType) else TYPE_SORT)
                for item_name, item in ext.ty.exports(engine).items()
            ]
            return name, items
    raise Unadaptable("the component does not import wasi:io/streams")


def wrap(engine: Engine, data: bytes) -> bytes:
    """The guest composed with the adapter. Raises Unadaptable (or WasmtimeError) if it cannot be."""
    layout = read_layout(data)
    streams_name, items = streams_import(engine, data, layout)
    writes, reads = _moved([n for n, _ in items])
    if not writes and not reads:
        raise Unadaptable("the component moves no bytes through wasi:io/streams")
    adapter_bytes = wat2wasm(adapter_wat(items))
    streams = next(i for n, s, i in layout.imports if n == streams_name and s == INSTANCE_SORT)

    out = [PREAMBLE, data[len(PREAMBLE) : layout.prefix_end]]
    # every export of the host's streams instance, by name
    index: dict[str, int] = {}
    out.append(section(ALIAS, vec([_alias_export(streams, name, sort) for name, sort in items])))
    for name, sort in items:
        index[name] = layout.add(sort)
    fast_type = layout.add(TYPE_SORT)
    out.append(
        section(
            TYPE,
            vec(
                [
                    _fast_instance_type(
                        writes,
                        reads,
                        index.get("output-stream", 0),
                        index.get("input-stream", 0),
                        index["error"],
                    )
                ]
            ),
        )
    )
    fast = layout.add(INSTANCE_SORT)
    out.append(section(IMPORT, vec([b"\x00" + string(INTERFACE) + bytes([INSTANCE_SORT]) + uleb(fast_type)])))
    adapter_component = layout.add(COMPONENT_SORT)
    out.append(section(COMPONENT, adapter_bytes))
    args = [string(name) + bytes([sort]) + uleb(index[name]) for name, sort in items if name not in SHORT]
    args.append(string("fast") + bytes([INSTANCE_SORT]) + uleb(fast))
    adapter = layout.add(INSTANCE_SORT)
    out.append(section(INSTANCE, vec([b"\x00" + uleb(adapter_component) + vec(args)])))
    guest_component = layout.add(COMPONENT_SORT)
    out.append(section(COMPONENT, data))
    guest_args = [
        string(name) + bytes([sort]) + uleb(adapter if name == streams_name else i)
        for name, sort, i in layout.imports
    ]
    guest = layout.add(INSTANCE_SORT)
    out.append(section(INSTANCE, vec([b"\x00" + uleb(guest_component) + vec(guest_args)])))
    out.append(section(ALIAS, vec([_alias_export(guest, name, sort) for name, sort in layout.exports])))
    out.append(
        section(
            EXPORT,
            vec(
                [
                    b"\x00" + string(name) + bytes([sort]) + uleb(layout.add(sort)) + b"\x00"
                    for name, sort in layout.exports
                ]
            ),
        )
    )
    return b"".join(out)


def compile_adapted(engine: Engine, data: bytes, name: str) -> Component | None:
    """The guest, compiled inside the adapter's wrapper; None when it cannot be wrapped."""
    try:
        wrapped = wrap(engine, data)
    except (Unadaptable, WasmtimeError, IndexError, UnicodeDecodeError) as exc:
        log.info("%s: bodies cross as lists (no byte adapter): %s", name, str(exc).splitlines()[0])
        return None
    try:
        return Component(engine, wrapped)
    except WasmtimeError as exc:
        log.warning("%s: the byte adapter does not fit it: %s", name, str(exc).splitlines()[0])
        return None


# the host's side ---------------------------------------------------------------------------------


# `edgefn:io/bytes` on the host: the streams' own methods. Its latin-1 strings are linked as bytes
# (`_crossing.plan_of(..., latin1=True)`), so the host reads and writes them as any body chunk.
HOST: dict[str, Callable[..., Any]] = {
    "write": lambda stream, contents: stream.write(contents),
    "blocking-write-and-flush": lambda stream, contents: stream.blocking_write_and_flush(contents),
    "read": lambda stream, n: stream.read(n),
    "blocking-read": lambda stream, n: stream.blocking_read(n),
}
