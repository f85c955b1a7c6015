"""Errors of the config loader.

A bad `edgefn.toml` must stop start-up with one line per problem, each naming the file, the key
path and what is wrong, so that a user fixes every mistake in one edit instead of one per restart.
The loader therefore collects `ConfigProblem`s and raises a single `ConfigError` at the end.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# Characters that str.splitlines() breaks on: a user's key or value must not split a problem's line.
_LINE_BREAKS = str.maketrans({c: repr(c)[1:-1] for c in "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"})


@dataclass(frozen=True, slots=True)
class ConfigProblem:
    """One mistake in a config file; `key` is a path such as `routes[2].auth.algorithms`."""

    file: Path
    key: str
    message: str

    def __str__(self) -> str:
        text = f"{self.key}: {self.message}" if self.key else self.message
        return f"{self.file}: {text.translate(_LINE_BREAKS)}"


class ConfigError(Exception):
    """Every problem found in one config file; `str()` is one line per problem."""

    def __init__(self, problems: list[ConfigProblem]) -> None:
        if not problems:
            raise ValueError("ConfigError needs at least one problem")
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))

    def __str__(self) -> str:
        return "\n".join(str(p) for p in self.problems)
