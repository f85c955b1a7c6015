"""A component the runtime has loaded keeps working when the sweep removes its files.

The sweep may delete the blob and the compiled artifact of code that is still being served here (an
old version whose last request is still running while an alias moves, then the version deleted):
the runtime deserialized the artifact with wasmtime's `deserialize_file`, which maps the file; on
Linux an unlinked file's pages stay until the mapping goes, so new instances keep being made from
it. The test loads from a real artifact, checks it is mapped, unlinks both files and invokes again.
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

from tests.gateway.conftest import COMPILED
from tests.registry.test_blob_sweep import sha
from tests.wasm.conftest import arun
from tests.wasm.helpers import drain, request, runtime
from wasm_runtime import Limits
from wasm_runtime.build import cache_dir


def mappings(path: Path) -> list[str]:
    return [line for line in Path("/proc/self/maps").read_text().splitlines() if str(path) in line]


def test_a_loaded_component_runs_after_its_artifact_and_blob_are_unlinked(
    example_components: dict[str, Path], tmp_path: Path
) -> None:
    blob = tmp_path / "components" / "hello.wasm"
    blob.parent.mkdir()
    shutil.copyfile(example_components["hello"], blob)
    digest = sha(blob)

    async def main() -> None:
        async with runtime(tmp_path) as rt:
            artifact = rt.compiled_dir / f"{digest}-{rt.engine_key}.cwasm"
            artifact.parent.mkdir(parents=True)
            # Reuse an artifact another test compiled (a compile takes 5-20 s), else compile once.
            for shared in (COMPILED, cache_dir().parent / "test-data" / "compiled"):
                if (shared / artifact.name).exists():
                    shutil.copyfile(shared / artifact.name, artifact)
                    break
            else:
                async with runtime(tmp_path) as compiler:
                    await compiler.load(blob)
            assert artifact.exists()
            loaded = await rt.load(blob)
            assert loaded.from_cache, "the test needs a component deserialized from its artifact"
            assert mappings(artifact), "deserialize_file did not map the artifact"

            artifact.unlink()
            blob.unlink()
            still = mappings(artifact)
            assert still and all(line.endswith("(deleted)") for line in still)
            for _ in range(3):  # a fresh instance each time, made from the unlinked mapping
                response = await rt.invoke(loaded, request("/after-unlink"), limits=Limits())
                body = await drain(response)
                assert response.status == 200 and b"/after-unlink" in body

    arun(asyncio.wait_for(main(), 300), timeout=320)
