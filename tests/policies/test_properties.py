"""Properties that hold for every policy and request hypothesis can think of."""

from __future__ import annotations

from hypothesis import assume, given
from hypothesis import strategies as st

from policies.decision import Reason, Verdict
from policies.loader import load_text
from policies.matcher import CompiledPolicy, Request

label = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=10) \
    .filter(lambda s: not s.startswith("-") and not s.endswith("-") and "--" not in s)
domain = st.lists(label, min_size=1, max_size=3).map(lambda ls: ".".join([*ls, "test"]))
methods = st.sampled_from(["GET", "POST", "PUT", "DELETE"])
paths = st.lists(st.sampled_from(["a", "b", "c", "..", "."]), max_size=4).map(
    lambda ps: "/" + "/".join(ps))


def policy_with(allow_host: str, deny_path: str | None = None) -> CompiledPolicy:
    rules = f"  - id: allow\n    hosts: ['{allow_host}']\n"
    if deny_path:
        rules += f"  - id: deny\n    action: deny\n    hosts: ['{allow_host}']\n" \
                 f"    paths: ['{deny_path}']\n"
    return load_text(f"version: 1\nname: p\nrules:\n{rules}", "p.yaml")


@given(domain, domain, methods, paths)
def test_unmatched_request_is_denied(allowed: str, asked: str, method: str, path: str) -> None:
    assume(allowed != asked)
    p = policy_with(allowed)
    decision = p.decide(Request(443, "https", host=asked, method=method, path=path))
    assert decision.verdict == Verdict.DENY and decision.reason == Reason.NO_MATCHING_RULE


@given(domain, methods, paths)
def test_matching_deny_always_wins(host: str, method: str, path: str) -> None:
    p = policy_with(host, deny_path="/**")
    decision = p.decide(Request(443, "https", host=host, method=method, path=path))
    assert decision.verdict == Verdict.DENY and decision.rule == "deny"


@given(label, label)
def test_wildcard_never_matches_lookalikes(evil: str, prefix: str) -> None:
    assume(evil != "a")  # a.test.a.test really is below a.test
    p = load_text("version: 1\nname: w\nrules:\n  - id: w\n    hosts: ['*.a.test']\n", "w")
    for name in (f"a.test.{evil}.test", f"{prefix}a.test", "a.test", f"{evil}.xa.test"):
        assert p.decide_name(name).verdict == Verdict.DENY, name
    assert p.decide_name(f"{prefix}.a.test").verdict == Verdict.ALLOW
