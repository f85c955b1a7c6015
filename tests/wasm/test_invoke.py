"""Requests reach real guests intact; answers come back intact; logs, env, reuse, cache."""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
import threading
from pathlib import Path
from typing import Any

import pytest

from wasm_runtime import FunctionFailed, InvalidComponent, Limits, _components, _linker

from .conftest import arun
from .helpers import chunks, drain, request, runtime


def test_hello_sees_method_path_headers_body_and_env(components: dict[str, Path], data_dir: Path) -> None:
    lines: list[tuple[str, str]] = []

    async def main() -> tuple[int, list[tuple[str, bytes]], dict]:
        async with runtime(data_dir) as rt:
            comp = await rt.load(components["hello"])
            req = request(
                "/a/b?x=1&y=%20",
                "POST",
                [("x-test", b"one"), ("x-test", b"two"), ("content-type", b"text/plain")],
                chunks(b"hello ", b"", b"world \xff"),
            )
            resp = await rt.invoke(
                comp,
                req,
                limits=Limits(),
                env={"GREETING": "hi"},
                request_id="req-1",
                log=lambda stream, line: lines.append((stream, line)),
            )
            body = await drain(resp)
            return resp.status, resp.headers, json.loads(body)

    status, headers, echo = arun(main())
    assert status == 200
    assert ("content-type", b"application/json") in headers
    assert echo["method"] == "POST"
    assert echo["path"] == "/a/b?x=1&y=%20"
    assert echo["authority"] == "fn.test"
    assert echo["scheme"] == "HTTP"
    assert echo["headers"] == [["x-test", "one"], ["x-test", "two"], ["content-type", "text/plain"]]
    assert echo["body"] == "hello world \xff"
    assert echo["env"] == {"GREETING": "hi"}
    assert ("stdout", "hello handled POST /a/b?x=1&y=%20") in lines
    assert ("stderr", "a line on stderr") in lines


def test_other_methods_and_large_request_body(components: dict[str, Path], data_dir: Path) -> None:
    big = bytes(range(256)) * 8192  # 2 MiB, pulled as the guest reads

    async def main() -> dict:
        async with runtime(data_dir) as rt:
            comp = await rt.load(components["hello"])
            parts = [big[i : i + 65536] for i in range(0, len(big), 65536)]
            resp = await rt.invoke(comp, request("/", "PURGE", body=chunks(*parts)), limits=Limits())
            return json.loads(await drain(resp))

    echo = arun(main())
    assert echo["method"] == "PURGE"
    assert echo["body_len"] == len(big)
    assert echo["body_sha256"] == hashlib.sha256(big).hexdigest()


def test_instance_reuse_serves_several_requests_on_one_instance(
    components: dict[str, Path], data_dir: Path
) -> None:
    async def main() -> list[bool]:
        async with runtime(data_dir) as rt:
            comp = await rt.load(components["hello"])
            fresh = []
            for _ in range(4):
                resp = await rt.invoke(comp, request("/r"), limits=Limits(instance_reuse=3))
                assert json.loads(await drain(resp))["path"] == "/r"
                fresh.append(resp.stats.fresh_instance)
            return fresh

    assert arun(main()) == [True, False, False, True]


def test_stats_are_filled_when_the_body_ends(components: dict[str, Path], data_dir: Path) -> None:
    async def main():  # type: ignore[no-untyped-def]
        async with runtime(data_dir) as rt:
            comp = await rt.load(components["hello"])
            resp = await rt.invoke(comp, request(), limits=Limits())
            await drain(resp)
            return resp.stats

    stats = arun(main())
    assert stats.fresh_instance
    assert stats.duration_ms > 0
    assert 0 < stats.init_ms <= stats.duration_ms


def test_compile_once_then_restart_serves_from_the_cache(components: dict[str, Path], tmp_path: Path) -> None:
    async def load_twice() -> tuple[bool, bool, int]:
        async with runtime(tmp_path) as rt:
            first = await rt.load(components["hello"])
            again = await rt.load(components["hello"])
            assert again is first
        async with runtime(tmp_path) as rt2:
            restarted = await rt2.load(components["hello"])
            resp = await rt2.invoke(restarted, request("/after-restart"), limits=Limits())
            assert json.loads(await drain(resp))["path"] == "/after-restart"
        return first.from_cache, restarted.from_cache, len(list((tmp_path / "compiled").glob("*.cwasm")))

    first_cached, restarted_cached, artifacts = arun(load_twice())
    assert not first_cached
    assert restarted_cached
    assert artifacts == 1


def test_a_load_by_known_hash_uses_the_artifact_without_reading_the_file(
    components: dict[str, Path], data_dir: Path, tmp_path: Path
) -> None:
    """A registry blob is named by its hash: with the compiled artifact there, a restart loads it
    without reading (or hashing) the file; without one, the file must hash to the name."""
    import hashlib
    import shutil

    hello = components["hello"]
    sha = hashlib.sha256(hello.read_bytes()).hexdigest()

    async def main() -> None:
        async with runtime(data_dir) as rt:
            await rt.load(hello)  # the artifact exists from here on
        async with runtime(data_dir) as rt:
            gone = tmp_path / "gone.wasm"  # never read: it does not even exist
            loaded = await rt.load(gone, sha256=sha)
            assert loaded.from_cache and loaded.sha256 == sha
            resp = await rt.invoke(loaded, request("/by-hash"), limits=Limits())
            assert json.loads(await drain(resp))["path"] == "/by-hash"
        async with runtime(tmp_path / "empty") as rt:  # no artifact: the bytes are read and checked
            copy = tmp_path / "copy.wasm"
            shutil.copyfile(hello, copy)
            with pytest.raises(InvalidComponent, match="do not hash to the expected sha256"):
                await rt.load(copy, sha256="0" * 64)

    arun(main())


def test_a_restart_links_from_the_import_plan_kept_beside_the_artifact(
    components: dict[str, Path], data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Reading a component's import types is most of a linker's cost: the plan made from them is
    kept beside the compiled artifact, and a restart links from it without reading them; a plan
    file that is damaged or of another format is read again from the types and replaced."""
    hello = components["hello"]
    compiled = tmp_path / "compiled"

    async def main() -> None:
        async with runtime(data_dir) as rt:  # the shared cache compiles it once per machine
            loaded = await rt.load(hello)
            artifact = rt.compiled_dir / f"{loaded.sha256}-{rt.engine_key}.cwasm"
            from_types = _linker.import_plan(rt.engine, loaded.component)
        compiled.mkdir()
        shutil.copyfile(artifact, compiled / artifact.name)
        kept = compiled / artifact.with_suffix(".imports").name
        async with runtime(tmp_path) as rt:
            first = await rt.load(hello)
            assert first.from_cache and _linker.load_plan(kept.read_bytes()) == from_types

        def no_types(*_: object) -> None:
            raise AssertionError("the import types were read again")

        with monkeypatch.context() as m:
            m.setattr(_components, "import_plan", no_types)
            async with runtime(tmp_path) as rt:
                restarted = await rt.load(hello)
                resp = await rt.invoke(restarted, request("/planned"), limits=Limits())
                assert json.loads(await drain(resp))["path"] == "/planned"

        for damaged in (b"\x00garbage", _linker.marshal.dumps(("another format", from_types))):
            kept.write_bytes(damaged)
            async with runtime(tmp_path) as rt:
                again = await rt.load(hello)
                resp = await rt.invoke(again, request("/again"), limits=Limits())
                assert json.loads(await drain(resp))["path"] == "/again"
            assert _linker.load_plan(kept.read_bytes()) == from_types

    arun(main())


def test_components_with_the_same_imports_share_one_linker(components: dict[str, Path], data_dir: Path) -> None:
    async def main() -> None:
        async with runtime(data_dir) as rt:
            hello, stream = await rt.load(components["hello"]), await rt.load(components["stream"])
            assert hello.sha256 != stream.sha256 and hello.linker is stream.linker
            resp = await rt.invoke(hello, request("/shared"), limits=Limits())
            assert json.loads(await drain(resp))["path"] == "/shared"
            resp = await rt.invoke(stream, request("/?n=3&ms=0&size=4"), limits=Limits())
            assert resp.status == 200 and len(await drain(resp)) == 12

    arun(main())


def test_a_components_file_is_hashed_off_the_event_loop(
    components: dict[str, Path], data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An 18 MB guest takes ~14 ms to hash: on the loop's thread that held up every request."""
    threads: list[str] = []
    file_digest = hashlib.file_digest

    def recorded(f: Any, digest: str) -> Any:
        threads.append(threading.current_thread().name)
        return file_digest(f, digest)

    monkeypatch.setattr(_components.hashlib, "file_digest", recorded)

    async def main() -> str:
        async with runtime(data_dir) as rt:
            await rt.load(components["hello"])
        return threading.current_thread().name

    loop_thread = arun(main())
    assert threads and loop_thread not in threads


def test_a_load_from_the_cache_hashes_the_file_without_reading_it_whole(
    components: dict[str, Path], data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A restart needs only the file's hash to find its artifact: reading 18 MB into a new
    buffer first was half of that (its page faults and copy)."""

    read_bytes = Path.read_bytes

    def read_whole(self: Path) -> bytes:
        if self.suffix == ".wasm":
            raise AssertionError(f"{self} was read whole")
        return read_bytes(self)  # the artifact's import plan, a few kB

    async def main() -> str:
        async with runtime(data_dir) as rt:
            await rt.load(components["hello"])  # the artifact exists from here on
        monkeypatch.setattr(Path, "read_bytes", read_whole)
        async with runtime(data_dir) as rt:
            loaded = await rt.load(components["hello"])
            resp = await rt.invoke(loaded, request("/hashed"), limits=Limits())
            assert loaded.from_cache
            return str(json.loads(await drain(resp))["path"])

    assert arun(main()) == "/hashed"


def test_validate_rejects_what_is_not_a_proxy_component(data_dir: Path, tmp_path: Path) -> None:
    async def main() -> None:
        async with runtime(data_dir) as rt:
            with pytest.raises(InvalidComponent, match="not a WebAssembly"):
                rt.validate(b"hello")
            with pytest.raises(InvalidComponent, match="core WebAssembly module"):
                rt.validate(b"\x00asm\x01\x00\x00\x00")
            with pytest.raises(InvalidComponent, match="incoming-handler"):
                rt.validate(b"\x00asm\x0d\x00\x01\x00" + b"\x00" * 16)
            bad = tmp_path / "bad.wasm"
            bad.write_bytes(b"\x00asm\x0d\x00\x01\x00wasi:http/incoming-handler@0.2.6")
            with pytest.raises(InvalidComponent, match="does not compile"):
                await rt.load(bad)

    arun(main())


def test_a_guest_that_cannot_be_reused_falls_back_to_fresh_instances(
    components: dict[str, Path], data_dir: Path
) -> None:
    async def main() -> tuple[list[tuple[int, bool]], bool]:
        async with runtime(data_dir) as rt:
            comp = await rt.load(components["once"])
            seen = []
            for _ in range(3):
                resp = await rt.invoke(comp, request(), limits=Limits(instance_reuse=5))
                await drain(resp)
                assert dict(resp.headers)["x-served"] == b"1"
                seen.append((resp.status, resp.stats.fresh_instance))
            return seen, comp.reuse_ok

    seen, reuse_ok = arun(main())
    assert seen == [(200, True), (200, True), (200, True)]
    assert reuse_ok is False


def test_returning_without_a_response_is_a_function_failure(
    components: dict[str, Path], data_dir: Path
) -> None:
    async def main() -> None:
        async with runtime(data_dir) as rt:
            comp = await rt.load(components["once"])
            with pytest.raises(FunctionFailed, match="without setting a response"):
                await rt.invoke(comp, request("/never"), limits=Limits())

    arun(main())


def test_concurrent_invocations_stay_apart(components: dict[str, Path], data_dir: Path) -> None:
    """Host calls run on many worker threads at once; nothing may leak between them."""

    async def one(rt, comp, i: int) -> dict:  # type: ignore[no-untyped-def]
        resp = await rt.invoke(
            comp, request(f"/n/{i}", "POST", body=chunks(str(i).encode())), limits=Limits()
        )
        return json.loads(await drain(resp))

    async def main() -> list[dict]:
        async with runtime(data_dir) as rt:
            comp = await rt.load(components["hello"])
            return await asyncio.gather(*[one(rt, comp, i) for i in range(120)])

    for i, echo in enumerate(arun(main())):
        assert echo["path"] == f"/n/{i}"
        assert echo["body"] == str(i)
