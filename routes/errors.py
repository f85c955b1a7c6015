"""Errors of the config loader.

A bad `edgefn.toml` must stop start-up with one line per problem, each naming the file, the key
path and what is wrong, so that a user fixes every mistake in one edit instead of one per restart.
The loader therefore collects `ConfigProblem`s and raises a single `ConfigError` at the end.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class ConfigProblem:
    """One mistake in a config file; `key` is a path such as `routes[2].auth.algorithms`."""

    file: Path
    key: str
    message: str

    def __str__(self) -> str:
        if not self.key:
            return f"{self.file}: {self.message}"
        return f"{self.file}: {self.key}: {self.message}"


class ConfigError(Exception):
    """Every problem found in one config file; `str()` is one line per problem."""

    def __init__(self, problems: list[ConfigProblem]) -> None:
        if not problems:
            raise ValueError("ConfigError needs at least one problem")
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))

    def __str__(self) -> str:
        return "\n".join(str(p) for p in self.problems)
