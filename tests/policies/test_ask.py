"""`action: ask` and `on_unmatched: ask`: which requests are held for a person, and which
are decided without one."""

from __future__ import annotations

import pytest

from policies.decision import Reason, Verdict
from policies.loader import PolicyError, load_text
from policies.matcher import Request

ASKING = """version: 1
name: t
on_unmatched: {unmatched}
mode: {mode}
rules:
  - id: api
    hosts: [api.test]
    methods: [GET]
  - id: api-writes
    action: ask
    hosts: [api.test]
    methods: [POST]
    limits: {{requests_per_minute: 5}}
  - id: admin
    action: ask
    hosts: ["*.api.test"]
  - id: no-admin-delete
    action: deny
    hosts: [admin.api.test]
    methods: [DELETE]
  - id: exact
    hosts: [status.api.test]
"""


def policy(unmatched: str = "deny", mode: str = "enforce"):  # type: ignore[no-untyped-def]
    return load_text(ASKING.format(unmatched=unmatched, mode=mode), "t.yaml")


def http(host: str, method: str = "GET", path: str = "/", protocol: str = "https") -> Request:
    return Request(443, protocol, host=host, method=method, path=path)


@pytest.mark.parametrize(("host", "method", "verdict", "reason", "rule"), [
    ("api.test", "GET", Verdict.ALLOW, Reason.ALLOWED_BY_RULE, "api"),
    ("api.test", "POST", Verdict.DENY, Reason.APPROVAL_REQUIRED, "api-writes"),
    ("admin.api.test", "GET", Verdict.DENY, Reason.APPROVAL_REQUIRED, "admin"),
    ("admin.api.test", "DELETE", Verdict.DENY, Reason.DENIED_BY_RULE, "no-admin-delete"),
    ("status.api.test", "GET", Verdict.ALLOW, Reason.ALLOWED_BY_RULE, "exact"),  # more specific
    ("other.test", "GET", Verdict.DENY, Reason.NO_MATCHING_RULE, None),
])
def test_ask_rules_take_their_place_in_precedence(host: str, method: str, verdict: Verdict,
                                                  reason: Reason, rule: str | None) -> None:
    d = policy().decide(http(host, method))
    assert (d.verdict, d.reason, d.rule) == (verdict, reason, rule)
    assert not d.allowed or verdict == Verdict.ALLOW


def test_an_ask_decision_carries_the_grant_it_goes_out_under() -> None:
    d = policy().decide(http("api.test", "POST"))
    assert d.grant is not None and d.grant.limits is not None
    assert d.grant.limits.requests_per_minute == 5


def test_unmatched_http_requests_are_asked_about_and_streams_are_not() -> None:
    p = policy("ask")
    d = p.decide(http("other.test", "PUT", "/x"))
    assert (d.verdict, d.reason, d.rule) == (Verdict.DENY, Reason.APPROVAL_REQUIRED, None)
    assert p.decide(Request(5432, "tcp", host="other.test")).reason == Reason.NO_MATCHING_RULE
    # a deny rule is never turned into a question
    assert p.decide(http("admin.api.test", "DELETE")).reason == Reason.DENIED_BY_RULE


def test_names_an_ask_may_decide_are_answered_by_dns() -> None:
    assert policy().decide_name("admin.api.test").allowed   # no deny covers the whole host
    assert not policy().decide_name("other.test").allowed
    answered = policy("ask").decide_name("other.test")
    assert (answered.verdict, answered.reason) == (Verdict.ALLOW, Reason.APPROVAL_REQUIRED)


def test_monitor_mode_lets_asked_requests_through_as_would_deny() -> None:
    d = policy(mode="monitor").decide(http("api.test", "POST"))
    assert (d.verdict, d.reason, d.allowed) == (Verdict.WOULD_DENY, Reason.APPROVAL_REQUIRED,
                                                True)


@pytest.mark.parametrize("extra", [
    "inject: [{secret: T, as: bearer}]",
    "mcp: {tools: ['*']}",
])
def test_an_ask_rule_cannot_add_to_the_request(extra: str) -> None:
    with pytest.raises(PolicyError, match="ask rule cannot inject"):
        load_text(f"version: 1\nname: t\nrules:\n  - id: a\n    action: ask\n"
                  f"    hosts: [api.test]\n    {extra}\n", "t.yaml")


def test_on_unmatched_takes_deny_or_ask_only() -> None:
    with pytest.raises(PolicyError, match="on_unmatched"):
        load_text("version: 1\nname: t\non_unmatched: allow\n", "t.yaml")


def test_diff_reports_asking_about_unmatched_requests_as_widening() -> None:
    from policies.diff import diff

    changes = [str(c) for c in diff(policy("deny"), policy("ask"))]
    assert any(c.startswith("widens") and "on_unmatched deny -> ask" in c for c in changes)
    back = [str(c) for c in diff(policy("ask"), policy("deny"))]
    assert any(c.startswith("narrows") and "on_unmatched ask -> deny" in c for c in back)


def test_an_ask_rule_tied_with_an_allow_rule_is_an_error() -> None:
    with pytest.raises(PolicyError, match="they differ in action"):
        load_text("version: 1\nname: t\nrules:\n  - id: a\n    hosts: [api.test]\n"
                  "  - id: b\n    action: ask\n    hosts: [api.test]\n    methods: [POST]\n",
                  "t.yaml")


def test_policy_test_says_the_request_would_be_held() -> None:
    from policies.report import trial

    result = trial(policy(), http("api.test", "POST"))
    assert result.decision.reason == Reason.APPROVAL_REQUIRED
    assert result.steps[-1].startswith("ask: held until a person allows it (rule api-writes")
    assert result.nearest == []
