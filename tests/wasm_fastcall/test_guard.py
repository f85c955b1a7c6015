"""The version guard and the layout self-test: a wasmtime upgrade must fail here, loudly."""

from __future__ import annotations

import ctypes
import re
from pathlib import Path

import pytest
from wasmtime import _ffi as ffi

from wasm_runtime import _fastcall


def test_installed_wasmtime_is_the_one_this_module_targets() -> None:
    # If this fails, wasmtime moved: re-read component/_types.py, _linker.py and _func.py of the
    # new version, re-check the layout constants in _fastcall.py, then bump TARGET_VERSION.
    assert _fastcall.installed_version() == _fastcall.TARGET_VERSION == "49.0.0"


def test_pyproject_pins_the_targeted_version() -> None:
    pyproject = (Path(__file__).resolve().parents[2] / "pyproject.toml").read_text()
    assert re.search(r'"wasmtime==([^"]+)"', pyproject).group(1) == _fastcall.TARGET_VERSION  # type: ignore[union-attr]


def test_install_refuses_another_version(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_fastcall, "installed_version", lambda: "50.0.1")
    with pytest.raises(RuntimeError, match=r"written against wasmtime 49\.0\.0 internals; found 50\.0\.1"):
        _fastcall.install()


def test_value_layout_matches_the_c_library() -> None:
    assert _fastcall._layout_problem() is None


def test_layout_check_reports_a_moved_field(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_fastcall, "_PAYLOAD_OFFSET", 16)
    assert _fastcall._layout_problem() == "offset of val.of is 8, expected 16"


def test_install_is_idempotent(fast: None) -> None:
    import wasmtime.component._linker as linker
    import wasmtime.component._types as types

    before = (types.ListType.convert_to_c, linker.func_impl, types.RecordType.fields)
    _fastcall.install()
    assert (types.ListType.convert_to_c, linker.func_impl, types.RecordType.fields) == before


@pytest.mark.parametrize("size", [0, 1, 7, 4096, 1 << 20])
def test_bytes_round_trip_through_wasmtime_clone(size: int) -> None:
    data = bytes((i * 7 + 3) % 256 for i in range(min(size, 4096))) * max(1, size // 4096)
    data = data[:size]
    src = ffi.wasmtime_component_val_t()
    _fastcall._lower_bytes(data, ctypes.pointer(src))
    dst = ffi.wasmtime_component_val_t()
    ffi.wasmtime_component_val_clone(ctypes.byref(src), ctypes.byref(dst))
    ffi.wasmtime_component_val_delete(ctypes.byref(src))
    assert dst.kind == ffi.WASMTIME_COMPONENT_LIST.value
    assert dst.of.list.size == size
    if size:
        assert dst.of.list.data[size - 1].kind == ffi.WASMTIME_COMPONENT_U8.value
        assert dst.of.list.data[size - 1].of.u8 == data[-1]
    assert _fastcall._lift_bytes(dst) == data
    assert dst.of.list.size == 0, "the lifted vallist must be freed and emptied, as the generic path does"


def test_lift_rejects_a_list_of_other_kinds() -> None:
    vals = (ffi.wasmtime_component_val_t * 3)()
    for v in vals:
        v.kind = ffi.WASMTIME_COMPONENT_U32
        v.of.u32 = 7
    raw = ffi.wasmtime_component_vallist_t()
    ffi.wasmtime_component_vallist_new(raw, 3, vals)
    c = ffi.wasmtime_component_val_t()
    c.kind = ffi.WASMTIME_COMPONENT_LIST
    c.of.list = raw
    with pytest.raises(AssertionError, match="non-u8 element"):
        _fastcall._lift_bytes(c)
