"""Alias weights: `Resolved.pick` gives each version a share of draws equal to its weight."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.functions.registry import Registry, Resolved
from gateway.functions.registry_sqlite import SqliteStore

GRID = 2000  # uniform draws (i + 0.5) / GRID: the share of a label is exact to 1 / GRID

weights = st.floats(min_value=1e-6, max_value=1 - 1e-6, allow_nan=False, exclude_min=True, exclude_max=True)


def shares(resolved: Resolved) -> Counter[str]:
    return Counter(resolved.pick((i + 0.5) / GRID) for i in range(GRID))


@given(weight=weights)
def test_pick_shares_match_the_weights(weight: float) -> None:
    resolved = Resolved("f", "live", (("1", 1.0 - weight), ("2", weight)))
    counts = shares(resolved)
    assert set(counts) <= {"1", "2"}
    assert abs(counts["2"] / GRID - weight) <= 1 / GRID
    assert abs(counts["1"] / GRID - (1 - weight)) <= 1 / GRID


@given(weight=weights, rand=st.floats(min_value=0, max_value=1, exclude_max=True))
def test_pick_is_monotonic_and_total(weight: float, rand: float) -> None:
    resolved = Resolved("f", "live", (("1", 1.0 - weight), ("2", weight)))
    label = resolved.pick(rand)
    assert label == ("1" if rand < 1.0 - weight else "2")
    assert resolved.pick(0.0) == "1"
    assert resolved.pick(0.999999999999) == "2"


def test_a_single_choice_always_wins() -> None:
    assert set(shares(Resolved("f", None, (("$LATEST", 1.0),)))) == {"$LATEST"}


@settings(max_examples=25, deadline=None)
@given(weight=weights)
def test_registry_alias_resolves_to_its_weights(tmp_path_factory, weight: float) -> None:  # type: ignore[no-untyped-def]
    directory: Path = tmp_path_factory.mktemp("weights")
    reg = Registry(SqliteStore(directory / "data"))
    for text in ("a", "b"):
        path = directory / f"{text}.wasm"
        path.write_bytes(text.encode())
        reg.deploy("f", path)
        reg.publish("f")
    reg.set_alias("f", "live", 1, {2: weight})
    resolved = reg.resolve("f:live")
    assert abs(sum(w for _, w in resolved.choices) - 1) < 1e-12
    assert abs(shares(resolved)["2"] / GRID - weight) <= 1 / GRID
    reg.close()
