"""Just enough of the component model's binary format to nest a component in a wrapper, or to
add to one.

`read_layout` reads a component's leading type, import and alias sections (everything its imports
need) without decoding the types themselves, counting what each defines in each index space; the
rest of the file is only scanned for import and export sections. `index_spaces` walks every
top-level section to count what each index space holds at the end (to append definitions after
them). The writers encode the few section kinds `_body_adapter` and `_memory_probe` emit.
Anything outside that subset raises Unadaptable.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path


class Unadaptable(Exception):
    """The component's layout is not one the wrapper knows how to copy."""


PREAMBLE = b"\x00asm\x0d\x00\x01\x00"
# component section ids
CORE_CUSTOM, CORE_MODULE, CORE_INSTANCE, CORE_TYPE, COMPONENT = 0, 1, 2, 3, 4
INSTANCE, ALIAS, TYPE, CANON, START, IMPORT, EXPORT = 5, 6, 7, 8, 9, 10, 11
# sorts
FUNC, TYPE_SORT, COMPONENT_SORT, INSTANCE_SORT = 0x01, 0x03, 0x04, 0x05
VALUE_SORT = 0x02
CORE_EXPORT = 0x01  # the alias target: a core instance's export
# core sorts, as keys of the same counts: CORE | the core sort's byte
CORE = 0x100
CORE_FUNC, CORE_MEMORY, CORE_MODULE_SORT, CORE_INSTANCE_SORT = (
    CORE | 0x00,
    CORE | 0x02,
    CORE | 0x11,
    CORE | 0x12,
)


def rewriter_version(*files: str) -> str:
    """Part of the compile cache's key for components rewritten by these files (siblings of this
    one, which is always counted): a change to them must not reuse artifacts made before."""
    here = Path(__file__)
    sources = [here.read_bytes()] + [here.with_name(f).read_bytes() for f in files]
    return hashlib.sha256(b"".join(sources)).hexdigest()[:12]


# binary encoding -----------------------------------------------------------------------------


def uleb(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def string(s: str) -> bytes:
    raw = s.encode()
    return uleb(len(raw)) + raw


def vec(items: list[bytes]) -> bytes:
    return uleb(len(items)) + b"".join(items)


def section(sid: int, payload: bytes) -> bytes:
    return bytes([sid]) + uleb(len(payload)) + payload


class Reader:
    def __init__(self, data: bytes, pos: int = 0) -> None:
        self.data = data
        self.pos = pos

    def byte(self) -> int:
        b = self.data[self.pos]
        self.pos += 1
        return b

    def u32(self) -> int:
        result = shift = 0
        while True:
            b = self.byte()
            result |= (b & 0x7F) << shift
            if not b & 0x80:
                return result
            shift += 7

    def string(self) -> str:
        n = self.u32()
        s = self.data[self.pos : self.pos + n].decode()
        self.pos += n
        return s


# reading the guest ---------------------------------------------------------------------------


@dataclass
class _Counts:
    counts: dict[int, int] = field(default_factory=dict)  # sort (CORE | core sort for core ones) -> items

    def add(self, sort: int, n: int = 1) -> int:
        """Counts `n` new items of `sort`; returns the index of the first."""
        index = self.counts.get(sort, 0)
        self.counts[sort] = index + n
        return index


@dataclass
class Layout(_Counts):
    """What the guest's leading type, import and alias sections define."""

    prefix_end: int = 0
    imports: list[tuple[str, int, int]] = field(default_factory=list)  # name, sort, index
    exports: list[tuple[str, int]] = field(default_factory=list)  # name, sort


@dataclass
class Spaces(_Counts):
    """How many items each of a component's top-level index spaces holds after its last section."""

    memories: list[int] = field(default_factory=list)  # every core memory index (each an alias)


def _sections(data: bytes) -> list[tuple[int, int, int]]:
    if not data.startswith(PREAMBLE):
        raise Unadaptable("not a component of the binary version this wrapper writes")
    out = []
    r = Reader(data, len(PREAMBLE))
    while r.pos < len(data):
        sid = r.byte()
        size = r.u32()
        out.append((sid, r.pos, r.pos + size))
        r.pos += size
    return out


def read_layout(data: bytes) -> Layout:
    sections = _sections(data)
    layout = Layout(prefix_end=len(PREAMBLE))
    rest = 0
    for i, (sid, start, end) in enumerate(sections):
        if sid not in (TYPE, IMPORT, ALIAS, CORE_CUSTOM):
            rest = i
            break
        r = Reader(data, start)
        if sid == TYPE:
            layout.add(TYPE_SORT, _count(r, start, end, "types"))
        elif sid == IMPORT:
            for _ in range(r.u32()):
                name, sort = _import(r)
                if sort & CORE:
                    raise Unadaptable("a core item among the imports")
                layout.imports.append((name, sort, layout.add(sort)))
        elif sid == ALIAS:
            for _ in range(r.u32()):
                sort, target = _alias(r)
                if sort & CORE or target == CORE_EXPORT:
                    raise Unadaptable("a core alias among the imports")
                layout.add(sort)
        if r.pos != end and sid in (IMPORT, ALIAS):
            raise Unadaptable(f"section {sid} at {start} did not parse to its end")
        layout.prefix_end = end
    else:
        raise Unadaptable("the component has nothing but imports")
    for sid, start, _end in sections[rest:]:
        if sid == IMPORT:
            raise Unadaptable("imports after the component's first definitions")
        if sid == EXPORT:
            for name, sort, ascribed in _exports(Reader(data, start)):
                if ascribed:
                    raise Unadaptable("an export with a type ascription")
                if sort & CORE:
                    raise Unadaptable("a core item among the exports")
                layout.exports.append((name, sort))
    return layout


# counting a whole component ------------------------------------------------------------------


def _any_sort(r: Reader) -> int:
    sort = r.byte()
    return CORE | r.byte() if sort == 0x00 else sort


def _canon_options(r: Reader) -> None:
    for _ in range(r.u32()):
        opt = r.byte()
        if opt in (0x03, 0x04, 0x05, 0x07):  # memory, realloc, post-return, callback: an index
            r.u32()
        elif opt not in (0x00, 0x01, 0x02, 0x06):  # string encodings, async
            raise Unadaptable(f"a canonical option 0x{opt:02x} this reader does not know")


def _canon(r: Reader) -> int:
    """Reads one canonical definition; returns the index space it adds to."""
    op = r.byte()
    if op in (0x00, 0x01):  # lift, lower
        if r.byte() != 0x00:
            raise Unadaptable("a canonical function of a form this reader does not know")
        r.u32()
        _canon_options(r)
        if op == 0x00:
            r.u32()
            return FUNC
        return CORE_FUNC
    if op in (0x02, 0x03, 0x04, 0x07):  # resource.new, .drop, .rep, .drop async
        r.u32()
        return CORE_FUNC
    raise Unadaptable(f"a canonical definition 0x{op:02x} this reader does not know")


def _extern_desc(r: Reader) -> int:
    """Reads an import's or an export ascription's type; returns its sort."""
    kind = r.byte()
    if kind == 0x00:
        if r.byte() != 0x11:
            raise Unadaptable("a core item other than a module among the imports")
        r.u32()
        return CORE_MODULE_SORT
    if kind == TYPE_SORT:
        if r.byte() == 0x00:
            r.u32()
        return TYPE_SORT
    if kind in (FUNC, COMPONENT_SORT, INSTANCE_SORT):
        r.u32()
        return kind
    raise Unadaptable("a value among the imports or exports")


def _name(r: Reader) -> str:
    if r.byte() != 0x00:
        raise Unadaptable("a name in a form this reader does not know")
    return r.string()


def _exports(r: Reader) -> list[tuple[str, int, bool]]:
    """An export section's (name, sort, whether it has a type ascription)."""
    out = []
    for _ in range(r.u32()):
        name = _name(r)
        sort = _any_sort(r)
        r.u32()
        ascribed = r.byte() == 0x01
        if ascribed:
            _extern_desc(r)
        out.append((name, sort, ascribed))
    return out


def _import(r: Reader) -> tuple[str, int]:
    """One import's name and sort."""
    return _name(r), _extern_desc(r)


def _alias(r: Reader) -> tuple[int, int]:
    """One alias's sort and target kind (an instance's export, a core instance's, or outer)."""
    sort = _any_sort(r)
    target = r.byte()
    if target in (0x00, CORE_EXPORT):
        r.u32()
        r.string()
    elif target == 0x02:
        r.u32()
        r.u32()
    else:
        raise Unadaptable(f"an alias target 0x{target:02x} this reader does not know")
    return sort, target


def _count(r: Reader, start: int, end: int, noun: str) -> int:
    """A section's item count, refused if the section is too short to hold that many."""
    count = r.u32()
    if count > end - r.pos:  # each item takes a byte at least: a bigger count is a lie
        raise Unadaptable(f"section at {start} claims {count} {noun}")
    return count


def export_names(data: bytes) -> list[str]:
    """Every name the component exports at its top level, reading nothing but export sections."""
    return [
        name
        for sid, start, _ in _sections(data)
        if sid == EXPORT
        for name, _, _ in _exports(Reader(data, start))
    ]


_DEFINES = {
    CORE_INSTANCE: CORE_INSTANCE_SORT,
    CORE_TYPE: CORE | 0x10,
    INSTANCE: INSTANCE_SORT,
    TYPE: TYPE_SORT,
}


def index_spaces(data: bytes) -> Spaces:
    spaces = Spaces()
    for sid, start, end in _sections(data):
        r = Reader(data, start)
        if sid == CORE_CUSTOM:
            continue
        if sid in (CORE_MODULE, COMPONENT):  # one nested definition, opaque here
            spaces.add(CORE_MODULE_SORT if sid == CORE_MODULE else COMPONENT_SORT)
            continue
        if sid in (CORE_INSTANCE, CORE_TYPE, INSTANCE, TYPE):
            spaces.add(_DEFINES[sid], _count(r, start, end, "items"))
            continue
        if sid == ALIAS:
            for _ in range(r.u32()):
                sort, _target = _alias(r)
                index = spaces.add(sort)
                if sort == CORE_MEMORY:
                    spaces.memories.append(index)
        elif sid == CANON:
            for _ in range(r.u32()):
                spaces.add(_canon(r))
        elif sid == START:
            r.u32()
            for _ in range(r.u32()):
                r.u32()
            spaces.add(VALUE_SORT, r.u32())
        elif sid == IMPORT:
            for _ in range(r.u32()):
                spaces.add(_import(r)[1])
        elif sid == EXPORT:
            for _, sort, _ in _exports(r):
                spaces.add(sort)  # an export is a new index of its sort
        else:
            raise Unadaptable(f"a section {sid} this reader does not know")
        if r.pos != end:
            raise Unadaptable(f"section {sid} at {start} did not parse to its end")
    return spaces
