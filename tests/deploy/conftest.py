"""What the deploy tests share: the files of deploy/ parsed once, and the image's file layout rebuilt
under a temporary directory.

No Docker engine runs on the test machines, so the image is read, not built: `Image` takes the
facts the other files depend on (where the config lives, where the components go, which functions
are built, the user, the ports) from the Dockerfile itself, and `FakeRoot` lays out a directory
tree the way the image would, so a config meant for the image can be loaded with its relative
paths resolving exactly as they would inside a container.
"""

from __future__ import annotations

import shlex
import tomllib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import dockerfile
import pytest
import yaml

from routes import Config, ConfigError, load_config

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"


@dataclass(frozen=True)
class Image:
    """Facts read from deploy/Dockerfile (one parse by the official BuildKit parser)."""

    commands: tuple[dockerfile.Command, ...]

    @classmethod
    def read(cls, path: Path = DEPLOY / "Dockerfile") -> Image:
        return cls(tuple(dockerfile.parse_file(str(path))))

    def all(self, cmd: str) -> list[dockerfile.Command]:
        return [c for c in self.commands if c.cmd == cmd.upper()]

    def last(self, cmd: str) -> dockerfile.Command:
        found = self.all(cmd)
        assert found, f"the Dockerfile has no {cmd.upper()}"
        return found[-1]

    def arg_default(self, name: str) -> str:
        for c in self.all("ARG"):
            key, _, value = c.value[0].partition("=")
            if key == name:
                return value.strip('"')
        raise AssertionError(f"the Dockerfile declares no ARG {name}")

    @property
    def entrypoint(self) -> list[str]:
        return list(self.last("ENTRYPOINT").value)

    @property
    def config_path(self) -> PurePosixPath:
        args = self.entrypoint
        assert "--config" in args, args
        return PurePosixPath(args[args.index("--config") + 1])

    @property
    def functions(self) -> list[str]:
        return shlex.split(self.arg_default("FUNCTIONS"))

    @property
    def functions_dir(self) -> PurePosixPath:
        """Where the runtime stage puts the components the build stage made."""
        for c in self.all("COPY"):
            if any(f.startswith("--from=") for f in c.flags) and c.value[0].endswith("/functions"):
                return PurePosixPath(c.value[-1])
        raise AssertionError("no COPY --from=... .../functions in the Dockerfile")

    @property
    def volumes(self) -> list[str]:
        return [v for c in self.all("VOLUME") for v in c.value]

    @property
    def exposed(self) -> set[int]:
        return {int(p.split("/")[0]) for c in self.all("EXPOSE") for p in c.value}


class FakeRoot:
    """A directory standing for the container's `/`, with the image's components in place."""

    def __init__(self, base: Path, image: Image, components: dict[str, Path]) -> None:
        self.base = base
        self.image = image
        functions = self.path(image.functions_dir)
        functions.mkdir(parents=True)
        for name in image.functions:
            assert name in components, f"the image builds {name!r}, which is not an example with app.py"
            (functions / f"{name}.wasm").symlink_to(components[name])

    def path(self, inside: str | PurePosixPath) -> Path:
        """The host path of an absolute path inside the container."""
        inside = PurePosixPath(inside)
        assert inside.is_absolute(), inside
        return self.base.joinpath(*inside.parts[1:])

    def install_config(self, text: str, at: PurePosixPath | None = None) -> Path:
        path = self.path(at or self.image.config_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return path


def load_or_fail(path: Path, origin: str) -> Config:
    """load_config, failing the test with every problem line (and where the text came from)."""
    try:
        return load_config(path)
    except ConfigError as exc:
        problems = exc.problems
    lines = "\n".join(str(p) for p in problems)
    pytest.fail(f"{origin} is not a valid edgefn.toml:\n{lines}", pytrace=False)


def toml_port(config_text: str, key: str) -> int:
    return int(tomllib.loads(config_text)["node"][key].rsplit(":", 1)[1])


def k8s_files() -> list[Path]:
    return sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")


def k8s_documents() -> list[tuple[str, dict[str, Any]]]:
    """Every resource in deploy/k8s as (file:index, document)."""
    docs = []
    for path in k8s_files():
        for i, doc in enumerate(yaml.safe_load_all(path.read_text())):
            assert isinstance(doc, dict), f"{path.name} document {i} is not a mapping"
            docs.append((f"{path.name}#{i}", doc))
    return docs


@pytest.fixture(scope="session")
def image() -> Image:
    return Image.read()


@pytest.fixture
def fake_root(tmp_path: Path, image: Image, example_components: dict[str, Path]) -> FakeRoot:
    return FakeRoot(tmp_path / "root", image, example_components)
