"""The function service on a real registry and runtime, without HTTP: what a reference resolves
to, which loaded targets survive a registry change, and the hooks invocations call."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import pytest

from gateway.functions.registry import FunctionConfig, Registry, open_registry
from gateway.functions.service import BadReference, Functions, UnknownFunction
from routes import parse_config
from routes.config import AsyncInvoke
from tests.gateway.conftest import shared_data_dir
from wasm_runtime import InvalidComponent, Runtime

T = TypeVar("T")


def run_with_service(
    tmp_path: Path,
    prepare: Callable[[Registry], None],
    body: Callable[[Functions, Registry], Awaitable[T]],
    toml: str = "",
) -> T:
    data = shared_data_dir(tmp_path / "data")
    config = parse_config(f'[node]\ndata_dir = "{data}"\n{toml}', tmp_path / "edgefn.toml")
    registry = open_registry(config.node, config.functions)
    prepare(registry)

    async def main() -> T:
        runtime = Runtime(data)
        try:
            service = Functions(config, runtime, registry)
            await service.load_all()
            return await body(service, registry)
        finally:
            await runtime.aclose()

    try:
        return asyncio.run(main())
    finally:
        registry.close()


def two_versions(hello: Path) -> Callable[[Registry], None]:
    def prepare(registry: Registry) -> None:
        registry.deploy("hello", hello, FunctionConfig(env=(("WHO", "v1"),), reserved_concurrency=3))
        registry.publish("hello")
        registry.configure("hello", FunctionConfig(env=(("WHO", "v2"),), reserved_concurrency=3))
        registry.publish("hello")
        registry.set_alias("hello", "live", 1, {2: 0.5})

    return prepare


def test_targets_are_reused_until_what_they_were_built_from_changes(
    tmp_path: Path, example_components
) -> None:
    async def body(service: Functions, registry: Registry) -> None:
        one = await service.pick("hello:1")
        latest = await service.pick("hello")
        assert (one.version, one.env, latest.version, latest.env) == (
            "1",
            {"WHO": "v1"},
            "$LATEST",
            {"WHO": "v2"},
        )
        assert one.concurrency is latest.concurrency and one.concurrency.limit == 3

        registry.set_secret("unrelated", "x")  # a new revision that changes nothing of hello's
        service.changed()
        assert await service.pick("hello:1") is one and await service.pick("hello") is latest

        registry.set_secret("token", "first-value")
        registry.configure(
            "hello",
            FunctionConfig(env=(("WHO", "v2"),), secrets=(("TOKEN", "token"),), reserved_concurrency=1),
        )
        service.changed()
        changed = await service.pick("hello")
        assert changed is not latest and changed.env == {"WHO": "v2", "TOKEN": "first-value"}
        assert changed.secrets == ("first-value",)
        assert await service.pick("hello:1") is one  # a version is immutable
        assert one.concurrency.limit == 1  # the function's limit, from $LATEST, for every version

        registry.set_secret("token", "second-value")
        service.changed()
        assert (await service.pick("hello")).env["TOKEN"] == "second-value"

    run_with_service(tmp_path, two_versions(example_components["hello"]), body)


def test_references_that_name_nothing_are_404s_of_their_own_kind(tmp_path: Path, example_components) -> None:
    async def body(service: Functions, registry: Registry) -> None:
        assert {(await service.pick("hello:live")).version for _ in range(60)} == {"1", "2"}
        for reference, kind, message in (
            ("ghost", UnknownFunction, "function 'ghost' does not exist"),
            ("hello:9", UnknownFunction, "has no version 9"),
            ("hello:nope", UnknownFunction, "has no alias 'nope'"),
            ("hello:", BadReference, "empty qualifier"),
            ("bad name", BadReference, "is not a function name"),
        ):
            with pytest.raises(kind, match=message) as caught:
                await service.pick(reference)
            assert caught.value.status == 404 and caught.value.code == "function_not_found"
            with pytest.raises(kind):
                service.resolve(reference)
        assert isinstance(UnknownFunction("x"), LookupError) and isinstance(BadReference("x"), ValueError)

        registry.delete_alias("hello", "live")  # served until now; gone from the next look
        service.changed()
        with pytest.raises(UnknownFunction):
            await service.pick("hello:live")

    run_with_service(tmp_path, two_versions(example_components["hello"]), body)


def test_schedules_and_async_settings_of_deployed_functions(tmp_path: Path, example_components) -> None:
    settings = AsyncInvoke(max_retries=1, retry_delays_s=(0.5,), max_event_age_s=120)

    def prepare(registry: Registry) -> None:
        registry.deploy(
            "tick",
            example_components["hello"],
            FunctionConfig(schedule=("rate(5 minutes)",), async_=settings),
        )
        registry.deploy("plain", example_components["hello"])

    async def body(service: Functions, registry: Registry) -> None:
        assert service.schedules() == [("tick", ("rate(5 minutes)",))]
        assert service.async_settings("tick") == settings
        assert service.async_settings("plain") == AsyncInvoke()
        await service.pick("tick")  # caches tick's registry entry for this revision
        registry.configure("tick", FunctionConfig(async_=AsyncInvoke(max_retries=0)))
        assert service.async_settings("tick") == AsyncInvoke(max_retries=0)
        registry.configure("tick", FunctionConfig())
        assert service.schedules() == []  # read again: the revision moved
        registry.delete("tick")
        assert service.async_settings("tick") == AsyncInvoke()  # events of a deleted function

    run_with_service(tmp_path, prepare, body)


def test_an_unreadable_registry_leaves_what_is_loaded_serving(tmp_path: Path, example_components) -> None:
    hello = example_components["hello"]

    async def body(service: Functions, registry: Registry) -> None:
        one = await service.pick("hello:1")
        registry.close()  # from now on every registry read fails, as with a control plane that is down
        service.changed()
        assert await service.pick("hello:1") is one
        assert (await service.pick("cfg")).version == "$LATEST"  # edgefn.toml needs no registry
        with pytest.raises(Exception, match="closed"):
            await service.pick("hello:2")  # never loaded: nothing to fall back on

    run_with_service(tmp_path, two_versions(hello), body, f'[functions.cfg]\ncomponent = "{hello}"\n')


def test_the_config_files_functions_load_side_by_side(
    tmp_path: Path, example_components, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each load is mostly file reading, hashing and deserializing on a thread: all of them start
    before any has ended, and the targets keep the file's order."""
    toml = "".join(
        f'\n[functions.{name}]\ncomponent = "{example_components[name]}"\n' for name in ("hello", "stream")
    )
    in_flight: list[int] = []
    most: list[int] = [0]

    def counted(load: Callable[..., Awaitable[object]]) -> Callable[..., Awaitable[object]]:
        async def load_counted(*args: object, **kwargs: object) -> object:
            in_flight.append(1)
            most[0] = max(most[0], len(in_flight))
            try:
                return await load(*args, **kwargs)
            finally:
                in_flight.pop()

        return load_counted

    async def body(service: Functions, registry: Registry) -> list[str]:
        return list(service._config_targets)

    monkeypatch.setattr(Runtime, "load", counted(Runtime.load))
    names = run_with_service(tmp_path, lambda registry: None, body, toml)
    assert names == ["hello", "stream"] and most[0] == 2


def test_a_broken_function_in_the_config_file_fails_start_up_with_its_own_error(
    tmp_path: Path, example_components
) -> None:
    broken = tmp_path / "broken.wasm"
    broken.write_bytes(b"\x00asm\x01\x00\x00\x00")  # a core module, not a component
    toml = (
        f'\n[functions.hello]\ncomponent = "{example_components["hello"]}"\n'
        f'\n[functions.broken]\ncomponent = "{broken}"\n'
    )

    async def body(service: Functions, registry: Registry) -> None:
        raise AssertionError("start-up went on")

    with pytest.raises(InvalidComponent, match="a core WebAssembly module, not a component"):
        run_with_service(tmp_path, lambda registry: None, body, toml)


def test_a_function_whose_file_changed_since_the_node_hashed_it_loads_the_file_as_it_is(
    tmp_path: Path, example_components, caplog: pytest.LogCaptureFixture
) -> None:
    """A worker loads the component its node hashed (`Function.sha256`), from the compiled
    artifact; with none to load and the file changed since, the file as it is now, not a failed
    start (a worker that cannot start gives its place up for good)."""
    hello = example_components["hello"]
    data = shared_data_dir(tmp_path / "data")
    config = parse_config(f'[node]\ndata_dir = "{data}"\n[functions.fn]\ncomponent = "{hello}"\n', tmp_path / "x.toml")
    hashed = dataclasses.replace(config.functions["fn"], sha256="0" * 64)  # no artifact, no such bytes
    config = dataclasses.replace(config, functions={"fn": hashed})
    registry = open_registry(config.node, config.functions)

    async def main() -> str:
        runtime = Runtime(data)
        try:
            service = Functions(config, runtime, registry)
            await service.load_all()
            return (await service.pick("fn")).component.sha256
        finally:
            await runtime.aclose()

    try:
        assert asyncio.run(main()) == hashlib.sha256(hello.read_bytes()).hexdigest()
    finally:
        registry.close()
    assert "do not hash to the expected sha256 000000000000; loading its file as it is now" in caplog.text
