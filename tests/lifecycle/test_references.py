"""Routes naming deployed functions: the loader defers the name, `unknown_functions` decides it.

The syntax of a reference (`NAME`, `NAME:ALIAS`, `NAME:3`, `NAME:$LATEST`) is checked by the loader
either way; only whether NAME exists waits for the registry's names.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from routes import ConfigError, parse_config, unknown_functions

F = "[functions.local]\ncomponent = 'local.wasm'\n"


@pytest.fixture
def where(tmp_path: Path) -> Path:
    """A config path next to the component `[functions.local]` names."""
    (tmp_path / "local.wasm").write_bytes(b"")
    return tmp_path / "edgefn.toml"


def routes(*refs: str) -> str:
    return "".join(
        f"[[routes]]\nname = 'r{i}'\npath = '/r{i}'\nfunction = '{ref}'\n" for i, ref in enumerate(refs)
    )


def test_deferred_names_are_kept_with_their_key_and_checked_against_the_registry(where: Path) -> None:
    text = F + routes("local", "hello", "hello:live", "hello:3", "hello:$LATEST", "ghost")
    config = parse_config(text, where, deployed=True)
    assert config.deployed_refs == (
        ("routes[1].function", "hello"),
        ("routes[2].function", "hello:live"),
        ("routes[3].function", "hello:3"),
        ("routes[4].function", "hello:$LATEST"),
        ("routes[5].function", "ghost"),
    )
    [problem] = unknown_functions(config, ["hello", "other"])
    assert str(problem) == (
        f"{where}: routes[5].function: function 'ghost' is neither configured nor deployed "
        "(configured: local; deployed: hello, other)"
    )
    assert len(unknown_functions(config, [])) == 5
    assert unknown_functions(config, ["hello", "ghost"]) == []


def test_edge_triggers_may_name_deployed_functions_too(where: Path) -> None:
    text = F + "[[routes]]\nname = 'e'\npath = '/e'\nfunction = 'local'\nedge = { viewer = 'geo:live' }\n"
    config = parse_config(text, where, deployed=True)
    assert config.deployed_refs == (("routes[0].edge.viewer", "geo:live"),)
    [problem] = unknown_functions(config, ["geox"])
    assert "routes[0].edge.viewer: function 'geo' is neither configured nor deployed" in str(problem)
    assert "did you mean 'geox'?" in str(problem)


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ("hello:", "empty qualifier after ':'"),
        ("hello:0", "versions start at 1"),
        ("hello:a.b", "'a.b' is not an alias"),
        ("he llo", "'he llo' is not a function name"),
    ],
)
def test_a_bad_reference_is_refused_at_load_even_when_names_are_deferred(
    where: Path, ref: str, message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(F + routes(ref), where, deployed=True)
    [problem] = caught.value.problems
    assert problem.key == "routes[0].function" and message in problem.message


def test_without_deployed_an_unknown_name_is_a_load_error_as_before(where: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(F + routes("hello:live"), where)
    [problem] = caught.value.problems
    assert problem.message == "function 'hello' is not configured (configured: local)"
