"""Decisions: deny first, deny rules win, wildcards never over-match."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from policies.decision import Reason, Verdict
from policies.loader import load_text
from policies.matcher import Request

P = load_text("""version: 1
name: t
rules:
  - id: github
    hosts: [".github.test"]
    ports: [443]
  - id: no-gist
    action: deny
    hosts: ["gist.github.test"]
  - id: raw
    hosts: ["raw.github.test"]
""", "t.yaml")


@pytest.mark.parametrize(("name", "port", "verdict", "reason", "rule"), [
    ("github.test", 443, "allow", "allowed_by_rule", "github"),
    ("api.github.test", 443, "allow", "allowed_by_rule", "github"),
    ("api.github.test", 80, "deny", "no_matching_rule", None),
    ("gist.github.test", 443, "deny", "denied_by_rule", "no-gist"),
    ("raw.github.test", 8080, "allow", "allowed_by_rule", "raw"),
    ("github.test.evil.test", 443, "deny", "no_matching_rule", None),
])
def test_decide(name: str, port: int, verdict: str, reason: str, rule: str | None) -> None:
    d = P.decide(Request(port, "https", host=name))
    assert (d.verdict, d.reason, d.rule) == (verdict, reason, rule)
    assert (d.policy, d.policy_version) == ("t", P.version)


def test_dns_question_hides_wholly_denied_names() -> None:
    assert P.decide_name("gist.github.test").verdict == Verdict.DENY
    assert P.decide_name("api.github.test").verdict == Verdict.ALLOW
    assert P.decide_name("example.test").reason == Reason.NO_MATCHING_RULE


def test_empty_policy_denies_everything() -> None:
    empty = load_text("version: 1\nname: e\n", "e.yaml")
    assert empty.decide(Request(443, "https", host="a.test")).verdict == Verdict.DENY
    assert empty.decide_name("a.test").verdict == Verdict.DENY


label = st.text(alphabet="abcdefghij", min_size=1, max_size=3)
names = st.lists(label, min_size=1, max_size=3).map(lambda ls: ".".join([*ls, "test"]))
ports = st.integers(min_value=1, max_value=65535)


@given(st.lists(st.tuples(names, st.lists(ports, max_size=2), st.booleans()), max_size=6),
       names, ports)
def test_properties(rules: list[tuple[str, list[int], bool]], name: str, port: int) -> None:
    text = "".join(
        f"  - id: r{i}\n    action: {'deny' if is_deny else 'allow'}\n"
        f"    hosts: ['{host}']\n    ports: {ports_}\n"
        for i, (host, ports_, is_deny) in enumerate(rules))
    p = load_text("version: 1\nname: h\nrules:\n" + (text or "  []\n"), "h.yaml")
    matching = [(h, ps, d) for h, ps, d in rules if h == name and (not ps or port in ps)]
    decision = p.decide(Request(port, "https", host=name))
    if not any(not d for _, _, d in matching):
        assert decision.verdict == Verdict.DENY      # no allow rule matches: denied
    if any(d for _, _, d in matching):
        assert decision.reason == Reason.DENIED_BY_RULE  # a matching deny always wins


def test_each_path_glob_is_matched_once_when_several_rules_match(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The rank that picks the most specific of several matching rules comes from the match
    itself (the globs of a rule tried most specific first), not from matching them again."""
    from collections import Counter

    import policies.matcher

    policy = load_text("""version: 1
name: p
rules:
  - id: broad
    hosts: [api.test]
    paths: [/x/**, /repos/**]
  - id: issues
    hosts: [api.test]
    paths: [/repos/*/issues]
  - id: any
    hosts: [api.test]
""", "p.yaml")
    calls: Counter[str] = Counter()
    real = policies.matcher.path_matches

    def counted(glob: str, path: str, ignore_case: bool = False) -> bool:
        calls[glob] += 1
        return real(glob, path, ignore_case)

    monkeypatch.setattr(policies.matcher, "path_matches", counted)
    request = Request(443, "https", host="api.test", method="GET", path="/repos/a/issues")
    assert policy.decide(request).rule == "issues"
    assert calls == {"/repos/**": 1, "/repos/*/issues": 1}   # /x/** less specific: untried
    calls.clear()
    assert policy.decide(Request(443, "https", host="api.test", method="GET",
                                 path="/x/y")).rule == "broad"
    assert calls == {"/repos/**": 1, "/x/**": 1, "/repos/*/issues": 1}
