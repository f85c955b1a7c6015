"""Shared config text for the routes tests."""

from __future__ import annotations

from pathlib import Path

from routes import ConfigError, ConfigProblem, parse_config

# A small valid config that the validation cases extend.
BASE = """
[regions.eu-west]
location = [53.35, -6.26]
[regions.us-east]
location = [38.90, -77.04]

[origins.web]
endpoints = [{ url = "http://127.0.0.1:9001", region = "eu-west" }]

[functions.hello]
component = "hello.wasm"
"""


def config_dir(tmp_path: Path) -> Path:
    """A directory with the dummy component that BASE names."""
    (tmp_path / "hello.wasm").write_bytes(b"\0asm")
    return tmp_path / "edgefn.toml"


def problems_of(path: Path, text: str) -> list[ConfigProblem]:
    try:
        parse_config(text, path)
    except ConfigError as exc:
        for line in str(exc).splitlines():
            assert line.startswith(f"{path}: "), line
        return exc.problems
    return []
