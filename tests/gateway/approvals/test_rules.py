"""The rule `--for policy` writes: exactly the request asked about, appended to the policy's
YAML with its comments kept, and valid for the loader."""

from __future__ import annotations

import pytest

from gateway.approvals.ask import Ask
from gateway.approvals.rules import rule_for, with_rule
from gateway.errors import BadRequest
from policies.decision import Reason
from policies.loader import load_text
from policies.matcher import Request

POLICY = """version: 1
name: web
# why this policy exists
rules:
  - id: ask-api   # everything to the API is asked about
    action: ask
    hosts: [api.test]
"""
ASK = Ask("sb1", None, "web", "v1", "ask-api", "https", "api.test", 443, "POST", "/items/7")


def test_the_rule_allows_that_request_and_no_other() -> None:
    text = with_rule(POLICY, rule_for(ASK, 12, "alice", "2026-11-30T12:00:00Z"))
    assert "# why this policy exists" in text and "# everything to the API" in text
    policy = load_text(text, "web.yaml")
    allowed = policy.decide(Request(443, "https", host="api.test", method="POST",
                                    path="/items/7"))
    assert (allowed.verdict, allowed.rule) == ("allow", "approved-12")
    for other in (Request(443, "https", host="api.test", method="GET", path="/items/7"),
                  Request(443, "https", host="api.test", method="POST", path="/items/8"),
                  Request(443, "http", host="api.test", method="POST", path="/items/7")):
        assert policy.decide(other).reason == Reason.APPROVAL_REQUIRED


def test_a_port_other_than_the_scheme_default_is_named() -> None:
    ask = Ask("sb1", None, "web", "v1", None, "http", "api.test", 8080, "GET", "/")
    assert rule_for(ask, 3, "a", "t")["ports"] == [8080]
    assert "ports" not in rule_for(ASK, 3, "a", "t")


def test_a_policy_without_rules_gets_some() -> None:
    text = with_rule("version: 1\nname: web\non_unmatched: ask\n",
                     rule_for(ASK, 1, "a", "t"))
    assert [r.id for r in load_text(text, "web.yaml").rules] == ["approved-1"]


def test_a_path_a_policy_reads_as_a_glob_is_refused() -> None:
    with pytest.raises(BadRequest, match="glob"):
        rule_for(Ask("sb1", None, "web", "v1", None, "https", "api.test", 443, "GET", "/a/*"),
                 1, "a", "t")


def test_the_same_approval_is_not_written_twice() -> None:
    rule = rule_for(ASK, 5, "a", "t")
    with pytest.raises(BadRequest, match="already has a rule approved-5"):
        with_rule(with_rule(POLICY, rule), rule)
