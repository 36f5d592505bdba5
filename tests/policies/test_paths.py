"""Canonical paths (docs/POLICY.md, Path semantics): every spelling an upstream could read as
a denied path is either matched as that path or refused; a property test generates encoded
spellings of denied paths and none of them is allowed."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from policies.decision import Reason
from policies.loader import PolicyError, load_text
from policies.matcher import Request
from policies.paths import AmbiguousPath, canonical_path, path_matches


@pytest.mark.parametrize(("raw", "canonical"), [
    ("/admin/x", "/admin/x"),
    ("/%61dmin/x", "/admin/x"),                  # an unreserved character, encoded
    ("/%61%64%6D%69%6E/x", "/admin/x"),
    ("//admin/x", "/admin/x"),                   # repeated slashes
    ("/admin///x", "/admin/x"),
    ("/admin;/x", "/admin/x"),                   # a path parameter, as Java servers read it
    ("/admin;jsessionid=1/x", "/admin/x"),
    ("/x/..;/admin/x", "/admin/x"),              # Tomcat's `..;`
    ("/x/../admin/x", "/admin/x"),
    ("/x/%2e%2e/admin/x", "/admin/x"),
    ("/x/%2E./admin/x", "/admin/x"),
    ("/./admin/./x", "/admin/x"),
    ("/../../admin", "/admin"),                  # above the root stays at the root
    ("/admin/x?y=/../z", "/admin/x"),            # the query is not the path
    ("/a%20b", "/a%20b"),                        # reserved encodings are kept, upper case
    ("/a%3fb", "/a%3Fb"),
    ("/caf\u00e9", "/caf%C3%A9"),                # raw non-ASCII: percent-encoded
    ("/admin/", "/admin/"),                      # a trailing slash is kept
    ("/", "/"),
    ("/100%25", "/100%25"),                      # an encoded '%' on its own is fine
])
def test_canonical_form(raw: str, canonical: str) -> None:
    assert canonical_path(raw) == canonical


@pytest.mark.parametrize(("raw", "why"), [
    ("/admin%2fx", "encoded '/'"),
    ("/admin%2Fx", "encoded '/'"),
    ("/admin%5cx", "encoded '\\\\'"),
    ("/admin%00x", "encoded NUL"),
    ("/admin\\x", "backslash"),
    ("/%252e%252e/admin", "encoded twice"),
    ("/%25%32%65", "encoded twice"),             # '%', '2', 'e' decoded one by one: '%2e'
    ("/%ff", "not UTF-8"),
    ("/%c0%ae", "not UTF-8"),                    # overlong '.'
    ("/%zz", "encodes nothing"),
    ("/%2", "encodes nothing"),
    ("admin", "does not start with '/'"),
    ("http://other.test/admin", "does not start with '/'"),
    ("*", "does not start with '/'"),
])
def test_ambiguous_paths_are_refused(raw: str, why: str) -> None:
    with pytest.raises(AmbiguousPath, match=why):
        canonical_path(raw)


def test_case_is_kept_and_matched_as_the_rule_says() -> None:
    assert canonical_path("/ADMIN/x") == "/ADMIN/x"
    assert not path_matches("/admin/**", "/ADMIN/x")
    assert path_matches("/admin/**", "/ADMIN/x", ignore_case=True)


@pytest.mark.parametrize(("glob", "path", "matches"), [
    ("/internal", "/internal/", True),       # many servers route both to one handler
    ("/a/*", "/a/b/", True),
    ("/a/", "/a", False),                    # a glob that ends in '/' asks for it
    ("/a/**", "/a", True),
])
def test_a_trailing_slash(glob: str, path: str, matches: bool) -> None:
    assert path_matches(glob, path) is matches


POLICY = load_text("""version: 1
name: paths
rules:
  - id: api
    hosts: [api.test]
  - id: no-admin
    action: deny
    hosts: [api.test]
    paths: ["/admin/**", "/internal"]
    paths_case_insensitive: true
  - id: repos
    hosts: [java.test]
    paths: ["/repos/**"]
""", "paths.yaml")


def get(path: str, host: str = "api.test") -> Request:
    return Request(443, "https", host=host, method="GET", path=path)


@pytest.mark.parametrize("path", ["/%61dmin/x", "//admin/x", "/admin;/x", "/ADMIN/x",
                                  "/x/..;/admin/x", "/Internal", "/internal;a=b",
                                  "/internal/", "/internal/.", "/x/%2E%2E/internal"])
def test_encoded_spellings_of_a_denied_path_are_denied(path: str) -> None:
    decision = POLICY.decide(get(path))
    assert (decision.verdict, decision.rule) == ("deny", "no-admin")


def test_an_allow_rule_matches_the_canonical_path_and_carries_it() -> None:
    assert POLICY.decide(get("/repos/..;/admin", "java.test")).verdict == "deny"
    decision = POLICY.decide(get("/repos/a/./b;v=1", "java.test"))
    assert (decision.rule, decision.path) == ("repos", "/repos/a/b")


def test_ambiguous_only_where_rules_have_paths() -> None:
    assert POLICY.decide(get("/admin%2fx")).reason == Reason.AMBIGUOUS_PATH
    open_ = load_text("version: 1\nname: o\nrules:\n  - {id: a, hosts: [api.test]}\n", "o.yaml")
    decision = open_.decide(get("/files/a%2fb"))     # nothing to agree on: sent as it is
    assert decision.allowed and decision.path is None


def test_paths_case_insensitive_needs_paths() -> None:
    with pytest.raises(PolicyError, match="paths_case_insensitive"):
        load_text("version: 1\nname: c\nrules:\n  - {id: a, hosts: [a.test], "
                  "paths_case_insensitive: true}\n", "c.yaml")


# Spellings an upstream may decode back into the denied path: each character as it is, or
# percent-encoded (either case); a separator as one or more slashes, maybe with a `;`
# parameter or a `.` segment; a detour through `x/..` or `x/..;`.
def _char(c: str) -> st.SearchStrategy[str]:
    return st.sampled_from([c, f"%{ord(c):02x}", f"%{ord(c):02X}"])


def _segment(word: str) -> st.SearchStrategy[str]:
    return st.tuples(*[_char(c) for c in word]).map("".join)


_SEPARATOR = st.sampled_from(["/", "//", "/./", "/%2e/", ";p=1/", ";/", "/x/../",
                              "/x/..;/", "/x/%2e%2e/", "/x/.%2E/"])
_CASE = st.sampled_from([str.lower, str.upper, str.title])


@given(_CASE.flatmap(lambda case: st.tuples(
    _SEPARATOR, _segment(case("admin")), _SEPARATOR, _segment("secret"))))
def test_no_encoded_spelling_of_a_denied_path_is_allowed(parts: tuple[str, ...]) -> None:
    lead, admin, sep, rest = parts
    path = "/" + lead.lstrip("/") + admin + sep + rest
    decision = POLICY.decide(get(path))
    assert not decision.allowed, (path, decision)
