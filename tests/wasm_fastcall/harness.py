"""Host side of the fastcall test guest: build it once, link every `edgefn:fastcall/host` shape, run it.

Shared by the tests in this package and by `bench/wasm_calls.py`, so that the benchmark measures
exactly the calls the tests prove correct.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from wasmtime import Engine, Store
from wasmtime.component import (
    Component,
    ComponentInstanceType,
    Linker,
    Record,
    ResourceAny,
    ResourceHost,
    ResourceType,
    Variant,
)

from wasm_runtime import _crossing, _hostcall, _linker
from wasm_runtime._canon import Err, HostResource, Ok

GUEST_DIR = Path(__file__).parent / "guests" / "fastcall"
REPO = Path(__file__).resolve().parents[2]
CACHE_DIR = Path(os.environ.get("EDGEFN_FASTCALL_CACHE", REPO / ".edgefn-cache" / "wasm_fastcall"))
WORLD = "fastcall"
HOST_INTERFACE = "edgefn:fastcall/host"
BLOB_TYPE_ID = 0xB10B
COMPONENTIZE_PY = Path(sys.executable).with_name("componentize-py")


def pattern(n: int) -> bytes:
    """Bytes that differ at every offset modulo 251, so a shifted or dropped byte shows."""
    block = bytes(i % 251 for i in range(251))
    return (block * (n // 251 + 1))[:n]


def _guest_digest() -> str:
    h = hashlib.sha256()
    for path in sorted(p for p in GUEST_DIR.rglob("*") if p.is_file() and p.suffix in {".py", ".wit"}):
        h.update(path.relative_to(GUEST_DIR).as_posix().encode())
        h.update(path.read_bytes())
    version = subprocess.run([str(COMPONENTIZE_PY), "--version"], capture_output=True, text=True, check=True)
    h.update(version.stdout.encode())
    return h.hexdigest()[:16]


# Local builder, cached by content hash so an unchanged guest is never rebuilt. Not
# `wasm_runtime.build.ensure_built`: that one builds against the wasi:http world from spin-sdk,
# while this guest targets its own `fastcall` world; switch if it ever takes a WIT dir and world.
def guest_wasm() -> Path:
    """Path of the built guest component, building it (about 7 s) only if its sources changed."""
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    out = CACHE_DIR / f"fastcall-{_guest_digest()}.wasm"
    if out.exists():
        return out
    with tempfile.TemporaryDirectory(dir=CACHE_DIR) as tmp:
        tmp_out = Path(tmp) / "guest.wasm"
        subprocess.run(
            [str(COMPONENTIZE_PY), "-q", "-d", str(GUEST_DIR / "wit"), "-w", WORLD, "componentize",
             "-s", "-p", str(GUEST_DIR), "app", "-o", str(tmp_out)],
            check=True,
        )
        os.replace(tmp_out, out)
    return out


def load_guest(engine: Engine) -> Component:
    """The guest compiled for `engine`'s default config, from a serialized cache (ms, not seconds)."""
    wasm = guest_wasm()
    cwasm = wasm.with_suffix(".cwasm")
    if not cwasm.exists():
        component = Component.from_file(engine, str(wasm))
        fd, tmp = tempfile.mkstemp(dir=CACHE_DIR)
        with os.fdopen(fd, "wb") as f:
            f.write(component.serialize())
        os.replace(tmp, cwasm)
        return component
    return Component.deserialize_file(engine, str(cwasm))


class Host:
    """Python implementations of `edgefn:fastcall/host`; each answer depends on every input byte."""

    def __init__(self) -> None:
        self.blobs: dict[int, bytearray] = {}
        self.next_rep = 1
        self.received: list[tuple[str, Any]] = []
        self.record_calls = True

    def _seen(self, name: str, value: Any) -> None:
        if self.record_calls:
            self.received.append((name, value))

    def funcs(self) -> dict[str, Callable[..., Any]]:
        return {
            "noop": lambda store: None,
            "add": lambda store, a, b: (a + b) & 0xFFFFFFFF,
            "echo": self.echo,
            "sink": self.sink,
            "source": lambda store, n: pattern(n),
            "try-read": self.try_read,
            "maybe": self.maybe,
            "reshape": self.reshape,
            "retag": self.retag,
            "pair-echo": self.pair_echo,
            "words": self.words,
            "strings": self.strings,
            "nested": self.nested,
            "[constructor]blob": self.blob_new,
            "[method]blob.append": self.blob_append,
            "[method]blob.take": self.blob_take,
            "consume": self.consume,
        }

    def echo(self, store: Any, data: bytes) -> bytes:
        self._seen("echo", data)
        return data

    def sink(self, store: Any, data: bytes) -> int:
        self._seen("sink", data)
        return len(data)

    def try_read(self, store: Any, n: int, fail: bool) -> bytes | str:
        return f"failed after {n}" if fail else pattern(n)

    def maybe(self, store: Any, data: bytes | None) -> bytes | None:
        self._seen("maybe", data)
        return None if data is None else data[::-1]

    def reshape(self, store: Any, s: bytes | str | int | None) -> bytes | str | int | None:
        self._seen("reshape", s)
        if isinstance(s, bytes):
            return s[::-1]
        if isinstance(s, str):
            return s.upper()
        if isinstance(s, int):
            return (s + 1) & 0xFFFFFFFF
        return None

    def retag(self, store: Any, v: Variant) -> Variant:
        self._seen("retag", (v.tag, v.payload))
        return Variant("right" if v.tag == "left" else "left", v.payload[::-1] + b"!")

    def pair_echo(self, store: Any, p: Record) -> Record:
        self._seen("pair", (p.name, p.body))
        out = Record()
        out.name = p.name + "!"
        out.body = p.body[::-1]
        return out

    def words(self, store: Any, items: list[int]) -> list[int]:
        self._seen("words", items)
        return [x ^ 0xDEADBEEF for x in items]

    def strings(self, store: Any, items: list[str]) -> list[str]:
        self._seen("strings", items)
        return [s.upper() for s in reversed(items)]

    def nested(self, store: Any, items: list[bytes]) -> list[bytes]:
        self._seen("nested", items)
        return [b[::-1] for b in reversed(items)]

    def blob_new(self, store: Any, data: bytes) -> ResourceHost:
        rep = self.next_rep
        self.next_rep += 1
        self.blobs[rep] = bytearray(data)
        return ResourceHost.own(rep, BLOB_TYPE_ID)

    def blob_append(self, store: Any, this: ResourceAny, data: bytes) -> int:
        blob = self.blobs[this.to_host(store).rep]
        blob += data
        return len(blob)

    def blob_take(self, store: Any, this: ResourceAny) -> bytes:
        return bytes(self.blobs[this.to_host(store).rep])

    def consume(self, store: Any, blob: ResourceAny) -> bytes:
        # `to_host` on an own<T> moves the handle out of the store's table: the destructor will
        # not run and `drop` would fail with "unknown handle index", so the host frees it here.
        self._seen("consume", blob.owned)
        return bytes(self.blobs.pop(blob.to_host(store).rep))

    def blob_drop(self, store: Any, rep: int) -> None:
        del self.blobs[rep]


class Blob(HostResource):
    resource_id = _linker.resource_id("blob")

    def __init__(self, data: bytes) -> None:
        self.data = bytearray(data)
        self.dropped = False

    def append(self, data: bytes) -> int:
        self.data += data
        return len(self.data)

    def take(self) -> bytes:
        return bytes(self.data)

    def on_drop(self) -> None:
        self.dropped = True


class CanonicalHost:
    """`harness.Host` again, in canonical values: what edgefn's host code sees and returns."""

    def __init__(self, record_calls: bool = True) -> None:
        self.received: list[tuple[str, Any]] = []
        self.blobs: list[Blob] = []
        self.record_calls = record_calls  # off in bench/wasm_calls.py, as for `Host`

    def impls(self) -> dict[str, Any]:
        return {
            "noop": lambda: None,
            "add": lambda a, b: (a + b) & 0xFFFFFFFF,
            "echo": self._seen("echo", lambda data: data),
            "sink": self._seen("sink", len),
            "source": pattern,
            "try-read": lambda n, fail: Err(f"failed after {n}") if fail else Ok(pattern(n)),
            "maybe": self._seen("maybe", lambda data: None if data is None else data[::-1]),
            "reshape": self._seen("reshape", self.reshape),
            "retag": self._seen(
                "retag", lambda v: Variant("right" if v.tag == "left" else "left", v.payload[::-1] + b"!")
            ),
            "pair-echo": self._seen("pair", lambda p: {"name": p["name"] + "!", "body": p["body"][::-1]}),
            "words": self._seen("words", lambda items: [x ^ 0xDEADBEEF for x in items]),
            "strings": self._seen("strings", lambda items: [s.upper() for s in reversed(items)]),
            "nested": self._seen("nested", lambda items: [b[::-1] for b in reversed(items)]),
            "[constructor]blob": self.blob,
            "[method]blob.append": Blob.append,
            "[method]blob.take": Blob.take,
            "consume": self._seen("consume", lambda blob: bytes(blob.data)),
        }

    def _seen(self, name: str, fn: Any) -> Any:
        if not self.record_calls:
            return fn

        def call(*args: Any) -> Any:
            self.received.append((name, args[0]))
            return fn(*args)

        return call

    @staticmethod
    def reshape(s: Variant) -> Variant:
        payload = s.payload
        if s.tag == "raw":
            payload = payload[::-1]
        elif s.tag == "text":
            payload = payload.upper()
        elif s.tag == "num":
            payload = (payload + 1) & 0xFFFFFFFF
        return Variant(s.tag, payload)

    def blob(self, data: bytes) -> Blob:
        b = Blob(data)
        self.blobs.append(b)
        return b


def crossing_linker(engine: Engine, component: Component, impls: dict[str, Any]) -> Linker:
    """Linked as the runtime links a function's imports, with these implementations."""
    _crossing.install()
    linker = Linker(engine)
    with linker.root() as root:
        for name, item in component.type.imports(engine).items():
            assert isinstance(item.ty, ComponentInstanceType)
            with root.add_instance(name) as inst:
                items = _linker.instance_items(engine, HOST_INTERFACE, item.ty)
                _linker._define(inst, HOST_INTERFACE, impls, items)
    return linker


def make_linker(engine: Engine, host: Host) -> Linker:
    linker = Linker(engine)
    with linker.root() as root, root.add_instance("edgefn:fastcall/host") as inst:
        inst.add_resource("blob", ResourceType.host(BLOB_TYPE_ID), host.blob_drop)
        for name, func in host.funcs().items():
            inst.add_func(name, func)
    return linker


def make_linker_for(engine: Engine, host: Host, component: Component) -> Linker:
    """A linker for a guest that imports only part of the host interface (the WAT guests)."""
    linker = make_linker(engine, host)
    linker.define_unknown_imports_as_traps(component)
    return linker


class Guest:
    """One instance of the test guest in its own Store; `table`: the store's resource table, for
    a linker whose host functions cross in C (`crossing_linker`)."""

    def __init__(
        self, engine: Engine, linker: Linker, component: Component, table: _hostcall.ResourceTable | None = None
    ) -> None:
        self.store = Store(engine)
        if table is not None:
            _crossing.bind_table(self.store, table)
        self.instance = linker.instantiate(self.store, component)
        self._funcs: dict[str, Any] = {}

    def call(self, name: str, *args: Any) -> Any:
        func = self._funcs.get(name)
        if func is None:
            func = self._funcs[name] = self.instance.get_func(self.store, name)
            if func is None:
                raise LookupError(f"guest exports no function {name!r}")
        result = func(self.store, *args)
        func.post_return(self.store)
        return result

    def run(self, op: str, data: bytes = b"", n: int = 0) -> bytes:
        result: bytes = self.call("run", op, data, n)
        return result


def wat_probe(ty: str) -> str:
    """A component importing `edgefn:fastcall/probe.f: func(a: T) -> T`, exported as `call`.

    Two of these with different T, linked through one Linker, import the same name with different
    types: the case a plan cache keyed only by host function would get wrong.
    """
    core = {"u32": "i32", "u64": "i64", "s32": "i32", "f64": "f64"}[ty]
    return f"""
(component
  (import "edgefn:fastcall/probe" (instance $h (export "f" (func (param "a" {ty}) (result {ty})))))
  (core module $m
    (import "h" "f" (func $f (param {core}) (result {core})))
    (func (export "call") (param {core}) (result {core}) local.get 0 call $f))
  (core func $lf (canon lower (func $h "f")))
  (core instance $hi (export "f" (func $lf)))
  (core instance $i (instantiate $m (with "h" (instance $hi))))
  (func (export "call") (param "a" {ty}) (result {ty}) (canon lift (core func $i "call"))))
"""


# A guest whose loops are wasm, not Python: it measures the host call alone.
WAT_LOOPS = """
(component
  (import "edgefn:fastcall/host" (instance $h
    (export "noop" (func))
    (export "add" (func (param "a" u32) (param "b" u32) (result u32)))))
  (core module $m
    (import "h" "noop" (func $noop))
    (import "h" "add" (func $add (param i32 i32) (result i32)))
    (func (export "loop-noop") (param $n i32)
      (block $done (loop $next
        (br_if $done (i32.eqz (local.get $n)))
        (call $noop)
        (local.set $n (i32.sub (local.get $n) (i32.const 1)))
        (br $next))))
    (func (export "loop-add") (param $n i32) (result i32) (local $acc i32)
      (block $done (loop $next
        (br_if $done (i32.eqz (local.get $n)))
        (local.set $acc (call $add (local.get $acc) (local.get $n)))
        (local.set $n (i32.sub (local.get $n) (i32.const 1)))
        (br $next)))
      (local.get $acc)))
  (core func $noop (canon lower (func $h "noop")))
  (core func $add (canon lower (func $h "add")))
  (core instance $hi (export "noop" (func $noop)) (export "add" (func $add)))
  (core instance $i (instantiate $m (with "h" (instance $hi))))
  (func (export "loop-noop") (param "n" u32) (canon lift (core func $i "loop-noop")))
  (func (export "loop-add") (param "n" u32) (result u32) (canon lift (core func $i "loop-add"))))
"""
