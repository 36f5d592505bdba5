"""HTTP conditions, addresses, protocols, monitor mode: each condition narrows a rule, a deny
rule wins whatever its conditions, and nothing else widens anything."""

from __future__ import annotations

import ipaddress

import pytest

from policies.decision import Reason, Verdict
from policies.loader import load_text
from policies.matcher import Request

POLICY = load_text("""version: 1
name: http
rules:
  - id: repos-read
    hosts: [api.test]
    ports: [443]
    protocols: [https]
    methods: [GET, HEAD]
    paths: ["/repos/**"]
  - id: search
    hosts: [api.test]
    methods: [GET]
    paths: ["/search"]
    query: {q: "*", page: "[0-9]"}
  - id: upload
    hosts: [api.test]
    methods: [POST]
    paths: ["/upload/*"]
    headers: {content-type: "application/json*"}
  - id: no-secrets
    action: deny
    hosts: [api.test]
    paths: ["/repos/*/secrets/**"]
  - id: db
    hosts: [db.test]
    ports: [5432]
    protocols: [tcp]
  - id: internal
    hosts: [internal.test]
    addresses: ["10.1.0.0/16"]
  - id: printer
    addresses: ["203.0.113.7"]
    ports: [631]
    protocols: [tcp]
""", "http.yaml")


def https(method: str, path: str, query: dict[str, list[str]] | None = None,
          headers: dict[str, list[str]] | None = None, host: str = "api.test",
          port: int = 443) -> Request:
    return Request(port, "https", host=host, method=method, path=path, query=query or {},
                   headers=headers or {})


CASES = [
    ("GET repos", https("GET", "/repos/a/b"), "allow", "repos-read"),
    ("HEAD repos", https("HEAD", "/repos"), "allow", "repos-read"),
    ("POST repos", https("POST", "/repos/a"), "deny", None),
    ("other path", https("GET", "/admin"), "deny", None),
    ("dot-dot escape", https("GET", "/repos/../admin"), "deny", None),
    ("encoded dot-dot", https("GET", "/repos/%2e%2e/admin"), "deny", None),
    ("deny carve-out", https("GET", "/repos/x/secrets/k"), "deny", "no-secrets"),
    ("deny via dot-dot", https("GET", "/repos/x/y/../secrets/k"), "deny", "no-secrets"),
    ("plain http", Request(443, "http", host="api.test", method="GET", path="/repos/a"),
     "deny", None),
    ("query ok", https("GET", "/search", {"q": ["x"], "page": ["2"]}), "allow", "search"),
    ("query missing", https("GET", "/search", {"q": ["x"]}), "deny", None),
    ("query bad", https("GET", "/search", {"q": ["x"], "page": ["22"]}), "deny", None),
    ("header ok", https("POST", "/upload/a", headers={"content-type": ["application/json"]}),
     "allow", "upload"),
    ("header bad", https("POST", "/upload/a", headers={"content-type": ["text/plain"]}),
     "deny", None),
    ("tcp stream", Request(5432, "tcp", host="db.test"), "allow", "db"),
    ("tls stream on tcp rule", Request(5432, "tls", host="db.test"), "deny", None),
    ("raw tcp needs a tcp rule", Request(443, "tcp", host="api.test"), "deny", None),
    ("http rule never matches a stream", Request(443, "tls", host="api.test"), "deny", None),
    ("address rule", Request(631, "tcp", address=ipaddress.IPv4Address("203.0.113.7")),
     "allow", "printer"),
    ("address rule other port",
     Request(80, "tcp", address=ipaddress.IPv4Address("203.0.113.7")), "deny", None),
    ("address not listed", Request(631, "tcp", address=ipaddress.IPv4Address("203.0.113.8")),
     "deny", None),
    ("host rule addresses are not literals",
     Request(80, "tcp", address=ipaddress.IPv4Address("10.1.2.3")), "deny", None),
]


@pytest.mark.parametrize(("label", "request_", "verdict", "rule"), CASES,
                         ids=[c[0] for c in CASES])
def test_decisions(label: str, request_: Request, verdict: str, rule: str | None) -> None:
    decision = POLICY.decide(request_)
    assert (decision.verdict, decision.rule) == (verdict, rule)


def test_ip_literal_without_rule_reason() -> None:
    decision = POLICY.decide(Request(80, "http", address=ipaddress.IPv4Address("192.0.2.9"),
                                     method="GET", path="/"))
    assert decision.reason == Reason.NOT_FROM_GATEWAY_DNS


def test_encoded_slash_refused_where_paths_matter() -> None:
    assert POLICY.decide(https("GET", "/repos/a%2Fb")).reason == Reason.AMBIGUOUS_PATH
    loose = load_text("version: 1\nname: l\nrules:\n  - id: all\n    hosts: [x.test]\n", "l")
    assert loose.decide(https("GET", "/a%2Fb", host="x.test")).verdict == Verdict.ALLOW


def test_grant_carries_limits_injections_and_networks() -> None:
    p = load_text("""version: 1
name: g
rules:
  - id: api
    hosts: [api.test]
    addresses: ["10.1.0.0/16"]
    limits: {requests_per_minute: 5}
    inject:
      - {secret: TOKEN, as: bearer}
""", "g")
    grant = p.decide(https("GET", "/")).grant
    assert grant is not None and grant.limits is not None
    assert grant.limits.requests_per_minute == 5
    assert [i.secret for i in grant.inject] == ["TOKEN"]
    assert [str(n) for n in grant.networks] == ["10.1.0.0/16"]


def test_monitor_mode_turns_policy_denials_into_would_deny() -> None:
    p = load_text("version: 1\nname: m\nmode: monitor\nrules:\n  - id: no\n    action: deny\n"
                  "    hosts: [bad.test]\n", "m")
    denied = p.decide(https("GET", "/", host="bad.test"))
    assert (denied.verdict, denied.reason, denied.rule) == \
        (Verdict.WOULD_DENY, Reason.DENIED_BY_RULE, "no")
    assert denied.allowed
    assert p.decide(https("GET", "/", host="other.test")).verdict == Verdict.WOULD_DENY
    assert p.decide_name("other.test").verdict == Verdict.WOULD_DENY
    # the gateway's structural checks are not the policy's to waive
    assert p.refuse(Reason.SNI_MISMATCH).verdict == Verdict.DENY
    assert p.refuse(Reason.REFUSED_ADDRESS).verdict == Verdict.DENY
