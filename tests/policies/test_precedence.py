"""Which rule decides (docs/POLICY.md, Precedence): any matching deny; otherwise the most
specific matching allow rule (host, then path), whatever the order; ties that would change
what is granted are errors; deny rules without `protocols` cover raw TCP; query conditions
hold for every value of a parameter."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from policies.loader import PolicyError, load_file, load_text
from policies.matcher import CompiledPolicy, CompiledRule, Request
from policies.precedence import never_decide


def policy(rules: str, name: str = "p") -> CompiledPolicy:
    return load_text(f"version: 1\nname: {name}\nrules:\n{rules}", f"{name}.yaml")


def https(host: str, method: str = "GET", path: str = "/",
          query: dict[str, list[str]] | None = None) -> Request:
    return Request(443, "https", host=host, method=method, path=path, query=query or {})


GITHUB = policy("""  - id: broad
    hosts: ["*.github.com"]
  - id: api
    hosts: [api.github.com]
    inject: [{secret: GITHUB_TOKEN, as: bearer}]
    limits: {requests_per_minute: 60}
  - id: api-repos
    hosts: [api.github.com]
    paths: ["/repos/**"]
    inject: [{secret: REPO_TOKEN, as: bearer}]
  - id: api-issues
    hosts: [api.github.com]
    paths: ["/repos/*/*/issues/**"]
  - id: deeper
    hosts: ["*.cdn.github.com"]
    limits: {requests_per_minute: 5}
""")


@pytest.mark.parametrize(("request_", "rule", "secret"), [
    (https("api.github.com"), "api", "GITHUB_TOKEN"),          # exact name over *.github.com
    (https("raw.github.com"), "broad", None),
    (https("api.github.com", path="/repos/o/r"), "api-repos", "REPO_TOKEN"),   # a path over none
    (https("api.github.com", path="/repos/o/r/issues/1"), "api-issues", None),  # longer path
    (https("x.cdn.github.com"), "deeper", None),                # longer suffix
])
def test_the_most_specific_allow_rule_decides(request_: Request, rule: str,
                                              secret: str | None) -> None:
    decision = GITHUB.decide(request_)
    assert decision.rule == rule
    assert [i.secret for i in decision.grant.inject] == ([secret] if secret else [])


def test_order_does_not_matter() -> None:
    reordered = policy("""  - id: api
    hosts: [api.github.com]
    inject: [{secret: GITHUB_TOKEN, as: bearer}]
  - id: broad
    hosts: ["*.github.com"]
""")
    assert reordered.decide(https("api.github.com")).rule == "api"


def test_a_specific_rule_that_does_not_match_leaves_the_broad_one() -> None:
    p = policy("""  - id: broad
    hosts: ["*.github.com"]
  - id: api
    hosts: [api.github.com]
    methods: [GET]
""")
    assert p.decide(https("api.github.com", method="POST")).rule == "broad"


def test_the_longest_prefix_decides_among_address_rules() -> None:
    p = policy("""  - id: wide
    addresses: [203.0.113.0/24]
    protocols: [tcp]
  - id: narrow
    addresses: [203.0.113.7]
    protocols: [tcp]
    limits: {bytes_per_minute: 1000}
""")
    at = ipaddress.IPv4Address
    assert p.decide(Request(22, "tcp", address=at("203.0.113.7"))).rule == "narrow"
    assert p.decide(Request(22, "tcp", address=at("203.0.113.8"))).rule == "wide"


def test_a_deny_still_wins_over_the_most_specific_allow() -> None:
    p = policy("""  - id: api
    hosts: [api.github.com]
  - id: no-github
    action: deny
    hosts: [".github.com"]
    methods: [DELETE]
""")
    assert p.decide(https("api.github.com", "DELETE")).rule == "no-github"


def test_a_deny_without_protocols_covers_raw_tcp() -> None:
    p = policy("""  - id: no-gist-ssh
    action: deny
    hosts: [gist.github.com]
    ports: [22]
  - id: ssh
    hosts: ["*.github.com"]
    ports: [22]
    protocols: [tcp]
""")
    gist = p.decide(Request(22, "tcp", host="gist.github.com"))
    assert (gist.verdict, gist.rule) == ("deny", "no-gist-ssh")
    assert p.decide(Request(22, "tcp", host="x.github.com")).rule == "ssh"
    assert p.decide(Request(22, "tls", host="gist.github.com")).verdict == "deny"


GIT = policy("""  - id: upload-pack
    hosts: [github.com]
    query: {service: git-upload-pack}
  - id: one
    hosts: [one.test]
    query: {service: {match: "git-*", exactly_one: true}}
  - id: only
    hosts: [only.test]
    query: {service: {match: "*", only: true}, page: "[0-9]"}
  - id: no-push
    action: deny
    hosts: [deny.test]
    query: {service: git-receive-pack}
  - id: deny-test
    hosts: [deny.test]
""")


@pytest.mark.parametrize(("host", "query", "rule"), [
    ("github.com", {"service": ["git-upload-pack"]}, "upload-pack"),
    # a repeated parameter cannot smuggle a second value past the condition
    ("github.com", {"service": ["git-receive-pack", "git-upload-pack"]}, None),
    ("github.com", {"service": ["git-upload-pack", "git-upload-pack"]}, "upload-pack"),
    ("one.test", {"service": ["git-upload-pack"]}, "one"),
    ("one.test", {"service": ["git-upload-pack", "git-upload-pack"]}, None),
    ("only.test", {"service": ["a"], "page": ["1"]}, "only"),
    ("only.test", {"service": ["a"], "page": ["1"], "extra": ["x"]}, None),
    # a deny fires when any value matches
    ("deny.test", {"service": ["git-upload-pack", "git-receive-pack"]}, "no-push"),
    ("deny.test", {"service": ["git-upload-pack"]}, "deny-test"),
])
def test_query_conditions_cover_every_value(host: str, query: dict[str, list[str]],
                                            rule: str | None) -> None:
    decision = GIT.decide(https(host, query=query))
    assert decision.rule == rule
    assert decision.verdict == ("allow" if rule and rule != "no-push" else "deny")


def test_query_flags_are_for_allow_rules() -> None:
    with pytest.raises(PolicyError, match="`exactly_one` and `only` narrow allow rules"):
        policy("  - id: d\n    action: deny\n    hosts: [a.test]\n"
               "    query: {a: {match: x, exactly_one: true}}\n")


def test_ties_that_change_the_grant_are_errors() -> None:
    with pytest.raises(PolicyError) as info:
        policy("""  - id: a
    hosts: ["*.github.com"]
  - id: b
    hosts: [".github.com"]
    methods: [GET]
    limits: {requests_per_minute: 5}
""", "tie")
    assert [str(e) for e in info.value.errors] == [
        "tie.yaml:6:5: rule b: ties with rule a: both match GET https://x.github.com:443/ at "
        "equal specificity and they differ in limits; make one more specific (a narrower host "
        "or path) or merge them"]


def test_ties_across_extends_point_at_the_inherited_rule(tmp_path: Path) -> None:
    (tmp_path / "base.yaml").write_text("version: 1\nname: base\nrules:\n  - id: w\n"
                                        "    hosts: [w.test]\n"
                                        "    limits: {requests_per_minute: 1}\n")
    top = tmp_path / "top.yaml"
    top.write_text("version: 1\nname: top\nextends: [base]\nrules:\n  - id: mine\n"
                   "    hosts: [w.test]\n")
    with pytest.raises(PolicyError) as info:
        load_file(top)
    assert str(info.value).startswith(f"{tmp_path / 'base.yaml'}:4:5: rule w: ties with rule "
                                      "mine: both match")


def test_equal_rules_with_the_same_grant_load_and_are_reported_as_shadowed() -> None:
    p = policy("""  - id: first
    hosts: [a.test]
  - id: again
    hosts: [a.test]
    ports: [443]
  - id: blocked
    hosts: [b.a.test]
    ports: [8443]
  - id: no-b
    action: deny
    hosts: [".a.test"]
    ports: [8443, 9443]
""")
    assert [(f.rule.id, f.message.split(":")[0]) for f in never_decide(p)] == [
        ("again", "shadowed"), ("blocked", "unreachable")]


label = st.sampled_from(["a", "b", "c"])
patterns = st.tuples(st.sampled_from(["", "*.", "."]), st.lists(label, min_size=1, max_size=2))


@given(st.lists(patterns, min_size=1, max_size=4), st.lists(label, min_size=1, max_size=3))
def test_the_deciding_rule_is_a_most_specific_match(rules: list[tuple[str, list[str]]],
                                                    name_labels: list[str]) -> None:
    text = "".join(f"  - id: r{i}\n    hosts: ['{mark}{'.'.join([*ls, 'test'])}']\n"
                   for i, (mark, ls) in enumerate(rules))
    p = policy(text)
    name = ".".join([*name_labels, "test"])
    decision = p.decide(https(name))
    matching = [r for r in p.rules if r.spec.host_patterns()[0].matches(name)]
    if not matching:
        assert decision.verdict == "deny"
        return

    def rank(rule: CompiledRule) -> tuple[int, int]:
        pattern = rule.spec.host_patterns()[0]
        return pattern.suffix.count("."), int(not pattern.subdomains)

    best = max(rank(r) for r in matching)
    chosen = next(r for r in matching if r.id == decision.rule)
    assert rank(chosen) == best
    assert chosen.index == min(r.index for r in matching if rank(r) == best)
