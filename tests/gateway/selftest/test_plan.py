"""What `sandgate selftest` chooses to try against a policy: one request each allowing rule
allows (checked by the policy engine itself), and a name the policy refuses."""

from __future__ import annotations

from gateway.selftest.plan import make_plan
from policies.loader import load_text


def test_requests_satisfy_every_condition_of_their_rule() -> None:
    plan = make_plan(load_text("""
version: 1
name: p
rules:
  - id: issues
    hosts: ["*.example.org"]
    methods: [POST]
    paths: ["/repos/*/issues/**"]
    query: {page: "[0-9]*"}
    headers: {accept: "application/*"}
    ports: [8443]
    inject: [{secret: TOKEN, as: basic, username_secret: USER}]
    allow_wildcard_inject: true
""", "p.yaml"))
    (probe,) = plan.probes
    assert probe.host == "sandgate-selftest.example.org"
    assert (probe.port, probe.tls, probe.method) == (8443, True, "POST")
    assert probe.path == "/repos/x/issues/sandgate-selftest?page=0x"
    assert probe.headers == {"accept": "application/x"}
    assert probe.secrets == ("TOKEN", "USER")
    assert plan.skipped == []


def test_rules_it_cannot_try_are_named_with_the_reason() -> None:
    plan = make_plan(load_text("""
version: 1
name: p
rules:
  - id: db
    hosts: [db.example.org]
    ports: [5432]
    protocols: [tcp]
  - id: s3
    hosts: [bucket.s3.example.com]
    inject: [{secret: AWS_SECRET, as: aws-sigv4, access_key_id: AWS_KEY}]
  - id: shadowed
    hosts: [gist.example.org]
  - id: no-gist
    action: deny
    hosts: [gist.example.org]
""", "p.yaml"))
    assert plan.probes == []
    assert [s.split(":")[0] for s in plan.skipped] == ["rule db", "rule s3", "rule shadowed"]
    assert "denied_by_rule" in plan.skipped[2]
    assert plan.tcp_rules


def test_one_probe_per_host_and_at_most_five() -> None:
    rules = "".join(f"  - id: r{i}\n    hosts: [h{i % 7}.example.org]\n" for i in range(12))
    plan = make_plan(load_text(f"version: 1\nname: p\nrules:\n{rules}", "p.yaml"))
    assert [p.host for p in plan.probes] == [f"h{i}.example.org" for i in range(5)]


def test_denied_name_is_one_the_policy_refuses() -> None:
    taken = make_plan(load_text("version: 1\nname: p\nrules:\n  - id: first\n"
                                "    hosts: [sandgate-selftest-denied.example]\n", "p.yaml"))
    assert taken.denied_name == "denied.sandgate-selftest.invalid"
    monitor = make_plan(load_text("version: 1\nname: p\nmode: monitor\nrules: []\n", "p.yaml"))
    assert monitor.denied_name == "sandgate-selftest-denied.example"   # would be refused
