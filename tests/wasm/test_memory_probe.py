"""The memory a guest reports (REPORT's Max Memory Used), read through the export the runtime adds."""

from __future__ import annotations

from pathlib import Path

import pytest
from wasmtime import Engine, Store, wat2wasm
from wasmtime.component import Component, Linker

from tests.wasm.conftest import arun
from tests.wasm.helpers import drain, request, runtime
from wasm_runtime import Limits
from wasm_runtime import _memory_probe as probe
from wasm_runtime._compile import compile_guest
from wasm_runtime._component_binary import (
    ALIAS,
    CANON,
    CORE_INSTANCE,
    EXPORT,
    PREAMBLE,
    Unadaptable,
    index_spaces,
    section,
    uleb,
)
from wasm_runtime.errors import InvalidComponent

MiB = 1 << 20

# Two core memories, both reachable from the top level, and one index of every other kind the
# probe's sections are numbered after: an import, a type, a lift, a lower, a resource.drop, an
# alias of each sort, an export.
TWO_MEMORIES = """(component
  (import "host" (instance $host (export "tick" (func))))
  (alias export $host "tick" (func $tick))
  (type $r (resource (rep i32)))
  (core func $drop (canon resource.drop $r))
  (core func $tick-lowered (canon lower (func $tick)))
  (core module $a (memory (export "memory") 3))
  (core module $b (memory (export "memory") 5) (func (export "f") (result i32) i32.const 7))
  (core instance $a (instantiate $a))
  (core instance $b (instantiate $b))
  (alias core export $a "memory" (core memory $ma))
  (alias core export $b "memory" (core memory $mb))
  (func $f (result u32) (canon lift (core func $b "f")))
  (export "answer" (func $f))
)"""


def _pages(data: bytes) -> int:
    engine = Engine()
    component = Component(engine, probe.add_probe(data))
    store = Store(engine)
    linker = Linker(engine)
    linker.define_unknown_imports_as_traps(component)
    func = linker.instantiate(store, component).get_func(store, probe.EXPORT_NAME)
    assert func is not None
    result: int = func(store)
    return result


def test_the_probe_sums_every_core_memory_of_the_top_level() -> None:
    data = wat2wasm(TWO_MEMORIES)
    assert index_spaces(data).memories == [0, 1]
    assert _pages(data) == 3 + 5


def test_a_component_that_exports_the_reserved_name_is_refused() -> None:
    wat = TWO_MEMORIES.replace('(export "answer"', f'(export "{probe.EXPORT_NAME}"')
    with pytest.raises(probe.ReservedExport):
        probe.add_probe(wat2wasm(wat))
    with pytest.raises(InvalidComponent, match="reserved"):
        compile_guest(Engine(), wat2wasm(wat), "liar")


def test_a_component_without_a_memory_is_compiled_without_the_probe() -> None:
    wat = """(component
      (core module $m (func (export "f") (result i32) i32.const 1))
      (core instance $i (instantiate $m))
      (func (export "one") (result u32) (canon lift (core func $i "f"))))"""
    with pytest.raises(Unadaptable, match="no core memory"):
        probe.add_probe(wat2wasm(wat))
    engine = Engine()
    exports = compile_guest(engine, wat2wasm(wat), "memoryless").type.exports(engine)
    assert list(exports) == ["one"]


def test_guests_report_the_memory_they_grew_to(components: dict[str, Path], data_dir: Path) -> None:
    """hog's `/hold/N` keeps N MiB: the figure grows by at least that, and on a reused instance it
    never comes back down (a linear memory does not shrink, and Lambda's figure is the peak)."""

    async def main() -> list[tuple[int, bool]]:
        async with runtime(data_dir) as rt:
            hog = await rt.load(components["hog"])
            assert hog.memory_probe is not None
            seen = []
            for path in ("/ok", "/hold/24", "/ok"):
                resp = await rt.invoke(hog, request(path), limits=Limits(memory_mb=96, instance_reuse=5))
                await drain(resp)
                assert resp.status == 200
                seen.append((resp.stats.max_memory_bytes, resp.stats.fresh_instance))
            return seen

    (base, fresh), (held, _), (after, reused) = arun(main())
    assert fresh and not reused
    assert base > 0 and base % probe.PAGE == 0
    assert held >= base + 24 * MiB
    assert after == held
    assert held <= 96 * MiB


@pytest.mark.parametrize("adapter", ["on", "off"])
def test_the_figure_does_not_depend_on_the_byte_adapter(
    components: dict[str, Path], data_dir: Path, monkeypatch: pytest.MonkeyPatch, adapter: str
) -> None:
    if adapter == "off":
        monkeypatch.setenv("EDGEFN_NO_BODY_ADAPTER", "1")

    async def main() -> int:
        async with runtime(data_dir) as rt:
            hello = await rt.load(components["hello"])
            resp = await rt.invoke(hello, request("/"), limits=Limits(memory_mb=64))
            await drain(resp)
            return resp.stats.max_memory_bytes

    used = arun(main())
    assert 4 * MiB <= used <= 64 * MiB  # componentize-py's heap image alone is over 12 MiB


@pytest.mark.parametrize("section_id", [ALIAS, CANON, CORE_INSTANCE, EXPORT])
def test_sections_that_claim_more_items_than_they_hold_are_refused(section_id: int) -> None:
    """Counting must end at the file's end, whatever count a section claims (an upload could
    otherwise spin the loader)."""
    lying = PREAMBLE + section(section_id, uleb(4_000_000_000) + b"\x01")
    with pytest.raises((Unadaptable, IndexError)):
        probe.add_probe(lying)


def test_a_memory_the_probe_cannot_import_leaves_the_component_as_it_was(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A 64-bit memory does not match the probe's 32-bit import: the probed component does not
    validate, so the component is compiled without it (and says so), not refused."""
    wat = """(component
      (core module $m (memory (export "memory") i64 1) (func (export "f") (result i32) i32.const 1))
      (core instance $i (instantiate $m))
      (alias core export $i "memory" (core memory $mem))
      (func (export "one") (result u32) (canon lift (core func $i "f"))))"""
    engine = Engine()
    with caplog.at_level("WARNING", logger="edgefn.wasm"):
        exports = compile_guest(engine, wat2wasm(wat), "memory64").type.exports(engine)
    assert list(exports) == ["one"]
    assert "the memory probe does not fit it" in caplog.text
