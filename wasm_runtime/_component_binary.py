"""Just enough of the component model's binary format to nest a component in a wrapper.

`read_layout` reads a component's leading type, import and alias sections (everything its imports
need) without decoding the types themselves, counting what each defines in each index space; the
rest of the file is only scanned for import and export sections. The writers encode the few
section kinds `_body_adapter` emits. Anything outside that subset raises Unadaptable.
"""

from __future__ import annotations

from dataclasses import dataclass, field


class Unadaptable(Exception):
    """The component's layout is not one the wrapper knows how to copy."""


PREAMBLE = b"\x00asm\x0d\x00\x01\x00"
# component section ids
CORE_CUSTOM, COMPONENT, INSTANCE, ALIAS, TYPE, IMPORT, EXPORT = 0, 4, 5, 6, 7, 10, 11
# sorts
FUNC, TYPE_SORT, COMPONENT_SORT, INSTANCE_SORT = 0x01, 0x03, 0x04, 0x05
VALUE_SORT = 0x02

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
class Layout:
    """What the guest's leading type, import and alias sections define."""

    prefix_end: int
    counts: dict[int, int] = field(default_factory=dict)  # sort -> items defined
    imports: list[tuple[str, int, int]] = field(default_factory=list)  # name, sort, index
    exports: list[tuple[str, int]] = field(default_factory=list)  # name, sort

    def add(self, sort: int) -> int:
        index = self.counts.get(sort, 0)
        self.counts[sort] = index + 1
        return index


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


def _sort(r: Reader) -> int:
    sort = r.byte()
    if sort == 0x00:
        raise Unadaptable("a core item among the imports")
    return sort


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
            count = r.u32()
            if count > end - r.pos:  # each type takes a byte at least: a bigger count is a lie
                raise Unadaptable(f"section {sid} at {start} claims {count} types")
            for _ in range(count):
                layout.add(TYPE_SORT)
        elif sid == IMPORT:
            for _ in range(r.u32()):
                if r.byte() != 0x00:
                    raise Unadaptable("an import name in a form this wrapper does not copy")
                name = r.string()
                sort = _sort(r)
                if sort == TYPE_SORT:
                    if r.byte() == 0x00:
                        r.u32()
                elif sort == VALUE_SORT:
                    raise Unadaptable("a value import")
                else:
                    r.u32()
                layout.imports.append((name, sort, layout.add(sort)))
        elif sid == ALIAS:
            for _ in range(r.u32()):
                sort = _sort(r)
                target = r.byte()
                if target == 0x00:
                    r.u32()
                    r.string()
                elif target == 0x02:
                    r.u32()
                    r.u32()
                else:
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
            r = Reader(data, start)
            for _ in range(r.u32()):
                if r.byte() != 0x00:
                    raise Unadaptable("an export name in a form this wrapper does not copy")
                name = r.string()
                sort = _sort(r)
                r.u32()
                if r.byte() == 0x01:
                    raise Unadaptable("an export with a type ascription")
                layout.exports.append((name, sort))
    return layout
