"""Header rewriting and hop-by-hop stripping as properties over arbitrary header lists."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from gateway.policies.headers import HOP_BY_HOP, HeaderRewriter, strip_hop_by_hop
from routes.config import HeaderRewrite

token = st.text(alphabet="abcdefghijklmnopqrstuvwxyz-", min_size=1, max_size=12).filter(
    lambda s: s.strip("-")
)
value = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=20)
headers = st.lists(st.tuples(token, value), max_size=12)


def raw(pairs: list[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    return [(k.encode(), v.encode()) for k, v in pairs]


@given(
    headers,
    st.lists(st.tuples(token, value), max_size=4),
    st.lists(st.tuples(token, value), max_size=4),
    st.lists(token, max_size=4),
)
def test_rewrite_properties(base, set_, append, remove) -> None:
    rule = HeaderRewrite(set=tuple(set_), append=tuple(append), remove=tuple(remove))
    out = HeaderRewriter(rule).apply(raw(base))
    names_out = [k for k, _ in out]
    set_names = {k.encode() for k, _ in set_}
    append_pairs = raw(append)
    for name in {r.encode() for r in remove} - set_names - {k for k, _ in append_pairs}:
        assert name not in names_out  # removed and not re-added
    for name in set_names:
        # a set header has exactly the configured values (plus appended ones), none of the client's
        expected = [v.encode() for k, v in set_ if k.encode() == name] + [
            v for k, v in append_pairs if k == name
        ]
        assert [v for k, v in out if k == name] == expected
    for pair in append_pairs:
        assert pair in out
    untouched = [(k, v) for k, v in raw(base) if k not in set_names and k not in {r.encode() for r in remove}]
    assert out[: len(untouched)] == untouched  # the rest keeps its order, ahead of what the rule adds


@given(headers, st.lists(token, max_size=3))
def test_hop_by_hop_and_connection_named_headers_are_gone(base, named) -> None:
    pairs = [*raw(base), (b"connection", ", ".join(named).encode())] if named else raw(base)
    out = strip_hop_by_hop(pairs)
    names = {k for k, _ in out}
    assert not names & HOP_BY_HOP
    assert not names & {n.encode() for n in named}
    kept = [p for p in pairs if p[0] not in HOP_BY_HOP and p[0] not in {n.encode() for n in named}]
    assert out == kept
