"""Reading a parsed TOML document with precise, collected errors.

`Table` wraps one TOML table and its key path. Each getter checks the type and range of one key,
records a `ConfigProblem` when it is wrong and returns the default instead, so the loader can go on
and report every other mistake in the same run. `Table.finish()` reports the keys nobody asked
for, with a "did you mean" when one is close to a known key.
"""

from __future__ import annotations

import datetime
import difflib
import json
import math
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

from routes.errors import ConfigProblem

T = TypeVar("T")
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


class Missing:
    """The type of `MISSING`: a key that is absent (distinct from any TOML value)."""


MISSING = Missing()


def join_key(prefix: str, name: str | int) -> str:
    """`routes[2]`, `functions.hello`, `request_headers.set."x.y"`: TOML's own spelling of a key path."""
    if isinstance(name, int):
        return f"{prefix}[{name}]"
    part = name if _BARE_KEY.fullmatch(name) else json.dumps(name)
    return f"{prefix}.{part}" if prefix else part


def type_name(value: object) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, datetime.date | datetime.time):
        return "a date/time"
    return type(value).__name__


def show(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def suggest(word: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(known), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


class Problems:
    """The problems of one file, in the order they were found."""

    def __init__(self, file: Path) -> None:
        self.file = file
        self.items: list[ConfigProblem] = []

    def add(self, key: str, message: str) -> None:
        self.items.append(ConfigProblem(self.file, key, message))


class Table:
    """One TOML table being read; every getter marks its key as known."""

    def __init__(self, problems: Problems, key: str, data: dict[str, Any]) -> None:
        self.problems = problems
        self.key = key
        self.data = data
        self.known: set[str] = set()

    @classmethod
    def of(cls, problems: Problems, key: str, value: object) -> Table | None:
        """A Table over `value`, or None (with a problem) if it is not a table."""
        if isinstance(value, dict):
            return cls(problems, key, value)
        problems.add(key, f"expected a table, got {type_name(value)} ({show(value)})")
        return None

    def sub(self, name: str) -> str:
        return join_key(self.key, name)

    def add(self, name: str, message: str) -> None:
        self.problems.add(self.sub(name), message)

    def raw(self, name: str) -> object:
        self.known.add(name)
        return self.data.get(name, MISSING)

    def finish(self, extra_known: Iterable[str] = ()) -> None:
        known = self.known | set(extra_known)
        for name in self.data:
            if name not in known:
                self.add(name, "unknown key" + suggest(name, known))

    def _typed(self, name: str, check: Callable[[object], bool], what: str, required: bool) -> object:
        value = self.raw(name)
        if isinstance(value, Missing):
            if required:
                self.add(name, f"is required ({what})")
            return MISSING
        if not check(value):
            self.add(name, f"expected {what}, got {type_name(value)} ({show(value)})")
            return MISSING
        return value

    def string(self, name: str, default: T, *, required: bool = False, empty_ok: bool = False) -> str | T:
        value = self._typed(name, lambda v: isinstance(v, str), "a string", required)
        if isinstance(value, Missing):
            return default
        assert isinstance(value, str)
        if not value and not empty_ok:
            self.add(name, "must not be empty")
            return default
        return value

    def boolean(self, name: str, default: bool) -> bool:
        value = self._typed(name, lambda v: isinstance(v, bool), "a boolean (true or false)", False)
        return default if isinstance(value, Missing) else bool(value)

    def integer(
        self, name: str, default: T, *, minimum: int | None = None, maximum: int | None = None
    ) -> int | T:
        value = self._typed(
            name, lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer", False
        )
        if isinstance(value, Missing):
            return default
        assert isinstance(value, int)
        if not in_range(value, minimum, maximum):
            self.add(name, f"{value} is out of range; {range_text(minimum, maximum)}")
            return default
        return value

    def number(
        self,
        name: str,
        default: T,
        *,
        minimum: float | None = None,
        maximum: float | None = None,
        positive: bool = False,
    ) -> float | T:
        value = self._typed(name, is_number, "a number", False)
        if isinstance(value, Missing):
            return default
        problem = number_problem(value, minimum, maximum, positive)
        if problem:
            self.add(name, problem)
            return default
        return float(value)  # type: ignore[arg-type]

    def strings(self, name: str, default: tuple[str, ...] = ()) -> tuple[str, ...]:
        """An array of strings; a problem names the index of each wrong item."""
        value = self._typed(name, lambda v: isinstance(v, list), "an array of strings", False)
        if isinstance(value, Missing):
            return default
        assert isinstance(value, list)
        out: list[str] = []
        for i, item in enumerate(value):
            if isinstance(item, str):
                out.append(item)
            else:
                self.problems.add(
                    join_key(self.sub(name), i), f"expected a string, got {type_name(item)} ({show(item)})"
                )
        return tuple(out)

    def table(self, name: str) -> Table | None:
        value = self.raw(name)
        if isinstance(value, Missing):
            return None
        return Table.of(self.problems, self.sub(name), value)


def is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def in_range(value: float, minimum: float | None, maximum: float | None) -> bool:
    return (minimum is None or value >= minimum) and (maximum is None or value <= maximum)


def range_text(minimum: float | None, maximum: float | None, positive: bool = False) -> str:
    if positive:
        return "must be greater than 0" + (f" and at most {maximum:g}" if maximum is not None else "")
    if minimum is not None and maximum is not None:
        return f"must be from {minimum:g} to {maximum:g}"
    if minimum is not None:
        return f"must be at least {minimum:g}"
    return f"must be at most {maximum:g}"


def number_problem(value: object, minimum: float | None, maximum: float | None, positive: bool) -> str:
    """The message for a number out of range, or "" when it is fine."""
    assert isinstance(value, int | float)
    if isinstance(value, float) and not math.isfinite(value):
        return f"{value} is not a finite number"
    if isinstance(value, int) and abs(value) >= 2**63:
        return f"{value} is out of range for a TOML integer"
    if (positive and value <= 0) or not in_range(value, minimum, maximum):
        shown = str(value) if isinstance(value, int) else f"{value:g}"
        return f"{shown} is out of range; {range_text(minimum, maximum, positive)}"
    return ""
