from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from policies.hosts import HostError, HostIndex, normalise_name, parse_pattern


@pytest.mark.parametrize(("raw", "expected"), [
    ("Example.COM.", "example.com"),
    ("bücher.example", "xn--bcher-kva.example"),
    ("  pypi.org ", "pypi.org"),
])
def test_normalise(raw: str, expected: str) -> None:
    assert normalise_name(raw) == expected


@pytest.mark.parametrize("raw", ["", ".", "a b.test", "-bad-.test"])
def test_normalise_rejects(raw: str) -> None:
    with pytest.raises(HostError):
        normalise_name(raw)


MATCHES = [
    # pattern, name, matches
    ("a.test", "a.test", True),
    ("a.test", "b.a.test", False),
    ("*.a.test", "b.a.test", True),
    ("*.a.test", "c.b.a.test", True),
    ("*.a.test", "a.test", False),
    ("*.a.test", "xa.test", False),
    ("*.a.test", "a.test.evil.test", False),
    (".a.test", "a.test", True),
    (".a.test", "b.a.test", True),
    (".a.test", "ba.test", False),
]


@pytest.mark.parametrize(("pattern", "name", "matches"), MATCHES)
def test_pattern_and_index_agree(pattern: str, name: str, matches: bool) -> None:
    parsed = parse_pattern(pattern)
    assert parsed.matches(name) is matches
    index: HostIndex[str] = HostIndex()
    index.add(parsed, "rule")
    assert (index.lookup(name) == ["rule"]) is matches


label = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=8)


@given(st.lists(label, min_size=1, max_size=3), st.lists(label, min_size=1, max_size=4))
def test_index_lookup_equals_linear_scan(suffix: list[str], name: list[str]) -> None:
    domain = ".".join([*suffix, "test"])
    candidate = ".".join(name + suffix[len(suffix) // 2:] + ["test"])
    patterns = [parse_pattern(p) for p in (domain, f"*.{domain}", f".{domain}")]
    index: HostIndex[int] = HostIndex()
    for i, p in enumerate(patterns):
        index.add(p, i)
    assert sorted(index.lookup(candidate)) == [i for i, p in enumerate(patterns)
                                               if p.matches(candidate)]
