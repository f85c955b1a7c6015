"""Test guest for wasm_runtime._fastcall: drives every host-call shape and reports what it saw.

Each scenario returns bytes so the host can compare runs byte for byte; framing is
length-prefixed so that a lost or extra byte anywhere changes the answer.
"""

import struct

import wit_world
from componentize_py_types import Err
from wit_world.imports import host


def _frame(*parts: bytes) -> bytes:
    return b"".join(struct.pack("<I", len(p)) + p for p in parts)


def _shape(s: host.Shape) -> bytes:
    if isinstance(s, host.Shape_Empty):
        return b"empty"
    if isinstance(s, host.Shape_Raw):
        return _frame(b"raw", s.value)
    if isinstance(s, host.Shape_Text):
        return _frame(b"text", s.value.encode())
    return _frame(b"num", struct.pack("<I", s.value))


def _two(t: host.Two) -> bytes:
    if isinstance(t, host.Two_Left):
        return _frame(b"left", t.value)
    return _frame(b"right", t.value)


class WitWorld(wit_world.WitWorld):
    def run(self, op: str, data: bytes, n: int) -> bytes:
        if op == "echo":
            return host.echo(data)
        if op == "sink":
            return struct.pack("<I", host.sink(data))
        if op == "source":
            return host.source(n)
        if op == "add":
            return struct.pack("<I", host.add(n, 7))
        if op == "try":
            try:
                return _frame(b"ok", host.try_read(n, False))
            except Err as e:
                return _frame(b"err", e.value.encode())
        if op == "try-fail":
            try:
                return _frame(b"ok", host.try_read(n, True))
            except Err as e:
                return _frame(b"err", e.value.encode())
        if op == "maybe":
            got = host.maybe(data)
            none = host.maybe(None)
            return _frame(b"none" if got is None else got, b"none" if none is None else none)
        if op == "reshape":
            return _frame(
                _shape(host.reshape(host.Shape_Raw(data))),
                _shape(host.reshape(host.Shape_Text(data.hex()[:64]))),
                _shape(host.reshape(host.Shape_Num(n))),
                _shape(host.reshape(host.Shape_Empty())),
            )
        if op == "retag":
            return _frame(_two(host.retag(host.Two_Left(data))), _two(host.retag(host.Two_Right(data[:3]))))
        if op == "pair":
            p = host.pair_echo(host.Pair(name="n" * (n % 50), body=data))
            return _frame(p.name.encode(), p.body)
        if op == "words":
            items = [b * 16777619 % 4294967296 for b in data]
            return b"".join(struct.pack("<I", w) for w in host.words(items))
        if op == "strings":
            items = [data[i : i + 5].hex() for i in range(0, len(data), 5)]
            return _frame(*(s.encode() for s in host.strings(items)))
        if op == "nested":
            items = [data[: len(data) // 3], b"", data[len(data) // 3 :]]
            return _frame(*host.nested(items))
        if op == "blob":
            with host.Blob(data) as b:
                size = b.append(data[: n % (len(data) + 1)])
                return _frame(struct.pack("<I", size), b.take())
        if op == "consume":
            blob = host.Blob(data)
            blob.append(b"+")
            return host.consume(blob)
        if op == "noop":
            host.noop()
            return b""
        raise ValueError(f"unknown op {op}")

    def loop_noop(self, n: int) -> None:
        for _ in range(n):
            host.noop()

    def loop_add(self, n: int) -> int:
        total = 0
        for i in range(n):
            total = host.add(total, i & 0xFF)
        return total

    def identity(self, data: bytes) -> bytes:
        return data

    def loop_echo(self, n: int, size: int) -> int:
        data = bytes(size)
        total = 0
        for _ in range(n):
            total += len(host.echo(data))
        return total

    def pull(self, n: int) -> int:
        return len(host.source(n))

    def push(self, n: int) -> int:
        return host.sink(bytes(n))

    def loop_blob(self, n: int, size: int) -> int:
        data = bytes(size)
        total = 0
        with host.Blob(b"") as blob:
            for _ in range(n):
                total = blob.append(data)
        return total
