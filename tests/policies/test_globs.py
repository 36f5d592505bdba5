"""Witnesses and coverage for globs: whatever they claim, the real matchers agree."""

from __future__ import annotations

import fnmatch

from hypothesis import given
from hypothesis import strategies as st

from policies.globs import common_path, common_value, path_covers
from policies.paths import path_matches

value_globs = st.text(alphabet="ab*?", max_size=6) | st.sampled_from(["[a-c]*", "[!a]b", "*[0-9]"])
values = st.text(alphabet="abc0", max_size=6)
segments = st.sampled_from(["a", "b", "*", "a*", "**", "x*y"])
path_globs = st.lists(segments, min_size=1, max_size=4).map(lambda s: "/" + "/".join(s)).filter(
    lambda g: "/**/**" not in g)
paths = st.lists(st.sampled_from(["a", "b", "ab", "xzy", "x"]), max_size=4).map(
    lambda s: "/" + "/".join(s))


@given(value_globs, value_globs, values)
def test_common_value_is_matched_by_both(a: str, b: str, probe: str) -> None:
    found = common_value(a, b)
    if found is not None:
        assert fnmatch.fnmatchcase(found, a) and fnmatch.fnmatchcase(found, b)
    elif "[" not in a + b:   # no witness: then no probe matches both either
        assert not (fnmatch.fnmatchcase(probe, a) and fnmatch.fnmatchcase(probe, b))


@given(path_globs, path_globs, paths)
def test_common_path_is_matched_by_both(a: str, b: str, probe: str) -> None:
    found = common_path(a, b)
    if found is not None:
        assert path_matches(a, found) and path_matches(b, found)
    else:
        assert not (path_matches(a, probe) and path_matches(b, probe))


@given(path_globs, path_globs, paths)
def test_path_covers_is_never_wrong(outer: str, inner: str, probe: str) -> None:
    if path_covers(outer, inner) and path_matches(inner, probe):
        assert path_matches(outer, probe)


def test_examples() -> None:
    assert common_value("git-*-pack", "*upload*") == "git-upload-pack"
    assert common_value("a", "b") is None
    assert common_path("/repos/**", "/*/x/issues") == "/repos/x/issues"
    assert common_path("/*/*/info/refs", "/*/*/git-upload-pack") is None
    assert path_covers("/repos/**", "/repos/*/issues") and not path_covers("/repos/*", "/repos/**")
