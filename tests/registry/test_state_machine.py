"""The registry's state transitions against a model of a few dictionaries (issue #4, "How it is shown").

Hypothesis drives deploy, configure, publish, version delete, alias set/delete, URL create/delete,
function delete and a reopen of the SQLite file, in any order; after every step the registry and
the model must agree on every function, version, alias and URL, and on which step was refused with
which error.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, initialize, invariant, multiple, rule

from gateway.functions.registry import Conflict, FunctionConfig, Invalid, NotFound, Registry, RegistryError
from gateway.functions.registry_sqlite import SqliteStore

NAMES = st.sampled_from(["a", "a", "a", "b"])  # mostly one function, so its history grows
CODES = st.sampled_from(["x", "y"])
ALIASES = st.sampled_from(["live", "beta"])
MEMORY = st.sampled_from([128, 256, 8])  # 8 breaks the 16 MB minimum


@dataclass
class ModelFunction:
    code: str
    memory: int = 128
    versions: dict[int, tuple[str, int]] = field(default_factory=dict)
    next_version: int = 1
    aliases: dict[str, tuple[int, dict[int, float]]] = field(default_factory=dict)
    urls: dict[str | None, str] = field(default_factory=dict)


class RegistryMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="registry-sm-"))
        self.codes = {}
        for text in ("x", "y", "z"):
            path = self.dir / f"{text}.wasm"
            path.write_bytes(b"code " + text.encode())
            self.codes[text] = (path, hashlib.sha256(path.read_bytes()).hexdigest())
        self.registry = self.open()
        self.model: dict[str, ModelFunction] = {}

    def open(self) -> Registry:
        return Registry(SqliteStore(self.dir / "data"))

    def teardown(self) -> None:
        self.registry.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def expect(self, error: type[RegistryError] | None, action: object) -> object:
        """Run `action`; it must raise exactly `error` (or nothing when error is None)."""
        try:
            result = action()  # type: ignore[operator]
        except RegistryError as exc:
            assert error is not None and type(exc) is error, f"unexpected {exc!r}"
            return None
        assert error is None, f"expected {error.__name__}"
        return result

    # -- rules -----------------------------------------------------------------------------------

    published = Bundle("published")  # (function, version) pairs ever published; some deleted since
    aliased = Bundle("aliased")  # (function, alias) pairs ever set; some deleted since

    @initialize(target=published, history=st.booleans())
    def start(self, history: bool) -> object:
        """Half the runs start from a function with two versions, where aliases have room to move."""
        if not history:
            return multiple()
        self.deploy("a", "x")
        first = self.publish("a")
        self.deploy("a", "y")
        second = self.publish("a")
        return multiple(("a", first.version), ("a", second.version))  # type: ignore[attr-defined]

    @rule(name=NAMES, code=CODES)
    def deploy(self, name: str, code: str) -> None:
        self.expect(None, lambda: self.registry.deploy(name, self.codes[code][0]))
        if name in self.model:
            self.model[name].code = code
        else:
            self.model[name] = ModelFunction(code)

    @rule(name=NAMES, memory=MEMORY)
    def configure(self, name: str, memory: int) -> None:
        error = Invalid if memory < 16 else NotFound if name not in self.model else None  # input first
        self.expect(error, lambda: self.registry.configure(name, FunctionConfig(memory_mb=memory)))
        if error is None:
            self.model[name].memory = memory

    @rule(target=published, name=NAMES)
    def publish_version(self, name: str) -> object:
        version = self.publish(name)
        return multiple() if version is None else (name, version.version)

    def publish(self, name: str) -> object:
        f = self.model.get(name)
        result = self.expect(None if f else NotFound, lambda: self.registry.publish(name))
        if f is None:
            return None
        newest = max(f.versions, default=None)
        if newest is not None and f.versions[newest] == (f.code, f.memory):
            assert result.version == newest  # type: ignore[attr-defined]
            return result
        assert result.version == f.next_version  # type: ignore[attr-defined]
        f.versions[f.next_version] = (f.code, f.memory)
        f.next_version += 1
        return result

    @rule(ref=published)
    def delete_version(self, ref: tuple[str, int]) -> None:
        name, version = ref
        f = self.model.get(name)
        if f is None or version not in f.versions:
            error: type[RegistryError] | None = NotFound
        elif any(version == v or version in extra for v, extra in f.aliases.values()):
            error = Conflict
        else:
            error = None
        self.expect(error, lambda: self.registry.delete_version(name, version))
        if error is None:
            del f.versions[version]  # type: ignore[union-attr]

    @rule(
        target=aliased,
        ref=published,
        alias=ALIASES,
        other=st.none() | published,
        weight=st.sampled_from([0.3, 0.3, 0.3, 1.0]),
    )
    def set_alias(
        self, ref: tuple[str, int], alias: str, other: tuple[str, int] | None, weight: float
    ) -> object:
        name, version = ref
        extra = {} if other is None else {other[1]: weight}
        f = self.model.get(name)
        if other is not None and (weight >= 1 or other[1] == version):
            error: type[RegistryError] | None = Invalid  # the input is checked before any lookup
        elif f is None or version not in f.versions or (other is not None and other[1] not in f.versions):
            error = NotFound
        else:
            error = None
        self.expect(error, lambda: self.registry.set_alias(name, alias, version, extra))
        if error is not None:
            return multiple()
        f.aliases[alias] = (version, extra)  # type: ignore[union-attr]
        return (name, alias)

    @rule(ref=aliased)
    def delete_alias(self, ref: tuple[str, str]) -> None:
        name, alias = ref
        f = self.model.get(name)
        error = None if f and alias in f.aliases else NotFound
        self.expect(error, lambda: self.registry.delete_alias(name, alias))
        if error is None:
            del f.aliases[alias]  # type: ignore[union-attr]
            f.urls.pop(alias, None)  # type: ignore[union-attr]

    @rule(name=NAMES, ref=st.none() | aliased)
    def create_url(self, name: str, ref: tuple[str, str] | None) -> None:
        name, qualifier = ref or (name, None)
        f = self.model.get(name)
        if f is None or (qualifier is not None and qualifier not in f.aliases):
            error: type[RegistryError] | None = NotFound
        elif qualifier in f.urls:
            error = Conflict
        else:
            error = None
        result = self.expect(error, lambda: self.registry.create_url(name, qualifier))
        if error is None:
            f.urls[qualifier] = result.url_id  # type: ignore[union-attr, attr-defined]

    @rule(name=NAMES, ref=st.none() | aliased)
    def delete_url(self, name: str, ref: tuple[str, str] | None) -> None:
        name, qualifier = ref or (name, None)
        f = self.model.get(name)
        error = None if f and qualifier in f.urls else NotFound
        self.expect(error, lambda: self.registry.delete_url(name, qualifier))
        if error is None:
            del f.urls[qualifier]  # type: ignore[union-attr]

    @rule(name=NAMES)
    def delete(self, name: str) -> None:
        error = None if name in self.model else NotFound
        self.expect(error, lambda: self.registry.delete(name))
        self.model.pop(name, None)

    @rule()
    def reopen(self) -> None:
        self.registry.close()
        self.registry = self.open()

    # -- the registry equals the model -----------------------------------------------------------

    @invariant()
    def agrees_with_the_model(self) -> None:
        assert [f.name for f in self.registry.functions()] == sorted(self.model)
        all_urls = []
        for name, f in self.model.items():
            info = self.registry.get(name)
            assert info.code_sha256 == self.codes[f.code][1]
            assert info.config.memory_mb == f.memory
            assert {v.version: (v.code_sha256, v.config.memory_mb) for v in info.versions} == {
                n: (self.codes[c][1], m) for n, (c, m) in f.versions.items()
            }
            assert {a.name: (a.version, dict(a.additional)) for a in info.aliases} == f.aliases
            urls = {u.qualifier: u.url_id for u in self.registry.urls(name)}
            assert urls == f.urls
            all_urls += f.urls.values()
            for v in info.versions:
                assert self.registry.blob_path(v.code_sha256).exists()
        assert sorted(u.url_id for u in self.registry.urls()) == sorted(all_urls)


RegistryMachine.TestCase.settings = settings(
    max_examples=200, stateful_step_count=30, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
test_registry_state_machine = pytest.mark.filterwarnings("ignore")(RegistryMachine.TestCase)
