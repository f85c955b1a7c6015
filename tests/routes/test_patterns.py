"""Templates and patterns on their own: encoding of rendered values, parsing results."""

from __future__ import annotations

import pytest

from routes import Template
from routes.patterns import HostPattern, PathPattern, split_path


@pytest.mark.parametrize(
    ("value", "segment", "tail"),
    [
        ("a b/c", "a%20b%2Fc", "a%20b/c"),  # raw text is encoded; only the tail keeps "/"
        ("a%2Fb", "a%2Fb", "a%2Fb"),  # a valid escape is kept, not double-encoded
        ("100%zz", "100%25zz", "100%25zz"),  # a stray "%" is encoded
        ("é?#", "%C3%A9%3F%23", "%C3%A9%3F%23"),
        ("..", "%2E%2E", "%2E%2E"),  # never a dot segment
        ("", "", ""),
    ],
)
def test_template_encodes_values_as_path_segments(value: str, segment: str, tail: str) -> None:
    assert Template.parse("/x/{v}").render({"v": value}) == "/x/" + segment
    assert Template.parse("/x/{v}", tail="v").render({"v": value}) == "/x/" + tail


def test_template_names_and_missing_values() -> None:
    template = Template.parse("https://{host}.example/{a}/{b}/{a}")
    assert template.names == ("host", "a", "b")
    with pytest.raises(KeyError):
        template.render({"host": "h", "a": "1"})


@pytest.mark.parametrize("text", ["/{", "/}", "/{a b}", "/{}", "/{*rest}"])
def test_bad_templates_say_why(text: str) -> None:
    with pytest.raises(ValueError, match=r"^'/"):
        Template.parse(text)


def test_path_pattern_parts() -> None:
    pattern = PathPattern.parse("/v1/{user}/files/{*path}")
    assert pattern.names == ("user", "path")
    assert pattern.match("/v1/ann/files/a/b") == {"user": "ann", "path": "a/b"}
    assert pattern.match("/v1/ann") is None
    assert PathPattern.parse("/").match("/") == {}
    assert PathPattern.parse("/").match("/a") is None


@pytest.mark.parametrize(
    ("path", "segments"),
    [
        ("/", [""]),
        ("/a/", ["a", ""]),
        ("/a/./b/../c", ["a", "c"]),
        ("/a/..", [""]),
        ("/%61%2f%7e", ["a%2F~"]),
        ("/a b", ["a%20b"]),
        ("a", None),
    ],
)
def test_split_path(path: str, segments: list[str] | None) -> None:
    assert split_path(path) == segments


def test_host_pattern_forms() -> None:
    assert HostPattern.parse("*.Example.COM").value == "example.com"
    assert HostPattern.parse("[::0:1]").value == "[::1]"
    assert HostPattern.parse("*.example.com").matches("A.B.example.com:80")
    assert not HostPattern.parse("*.example.com").matches("example.com")
    assert HostPattern.parse("*").rank > HostPattern.parse("*.com").rank > HostPattern.parse("*.a.com").rank
