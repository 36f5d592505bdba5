"""`policy diff`: every change that affects egress or credentials, classified widens,
narrows or credentials."""

from __future__ import annotations

import pytest

from policies.diff import diff
from policies.loader import load_text
from policies.matcher import CompiledPolicy

BASE = """  - id: api
    hosts: [api.github.com]
    ports: [443]
    protocols: [https]
    methods: [GET]
    paths: ["/repos/**"]
    query: {per_page: "[0-9]*"}
    headers: {accept: "application/json"}
    limits: {requests_per_minute: 60}
    inject: [{secret: GITHUB_TOKEN, as: bearer}]
"""


def policy(rules: str, top: str = "") -> CompiledPolicy:
    return load_text(f"version: 1\nname: p\n{top}rules:\n{rules or '  []'}", "p.yaml")


def changes(new: str, top: str = "", old: str = BASE) -> list[str]:
    return [str(c) for c in diff(policy(old), policy(new, top))]


@pytest.mark.parametrize(("before", "after", "expected"), [
    ("hosts: [api.github.com]", 'hosts: ["*.github.com"]\n    allow_wildcard_inject: true',
     "widens       rule api: hosts api.github.com -> *.github.com"),
    ('hosts: [api.github.com]', 'hosts: [api.github.com, uploads.github.com]',
     "widens       rule api: hosts api.github.com -> api.github.com, uploads.github.com"),
    ("ports: [443]", "ports: [443, 8443]", "widens       rule api: ports 443 -> 443, 8443"),
    ("    ports: [443]\n", "", "widens       rule api: ports 443 -> any"),
    ("protocols: [https]", "protocols: [http, https]\n    allow_cleartext_inject: true",
     "widens       rule api: protocols https -> http, https"),
    ("methods: [GET]", "methods: [GET, POST]", "widens       rule api: methods GET -> GET, POST"),
    ('paths: ["/repos/**"]', 'paths: ["/repos/*/*/issues"]',
     "narrows      rule api: paths /repos/** -> /repos/*/*/issues"),
    ('paths: ["/repos/**"]', 'paths: ["/repos/**"]\n    paths_case_insensitive: true',
     "widens       rule api: paths_case_insensitive false -> true"),
    ('query: {per_page: "[0-9]*"}', 'query: {per_page: {match: "[0-9]*", exactly_one: true}}',
     "narrows      rule api: query per_page: [0-9]* -> [0-9]* [exactly_one]"),
    ('query: {per_page: "[0-9]*"}', "query: {}",
     "widens       rule api: query per_page: [0-9]* -> none"),
    ('headers: {accept: "application/json"}', 'headers: {accept: "*"}',
     "widens       rule api: headers accept: application/json -> *"),
    ("limits: {requests_per_minute: 60}", "limits: {requests_per_minute: 600}",
     "widens       rule api: limits.requests_per_minute 60 -> 600"),
    ("limits: {requests_per_minute: 60}", "limits: {requests_per_minute: 60, bytes_per_minute: 1}",
     "narrows      rule api: limits.bytes_per_minute none -> 1"),
    ("inject: [{secret: GITHUB_TOKEN, as: bearer}]",
     "inject: [{secret: GITHUB_TOKEN, as: header, header: x-token}]",
     "credentials  rule api: inject GITHUB_TOKEN:bearer -> GITHUB_TOKEN:header"),
])
def test_each_field(before: str, after: str, expected: str) -> None:
    assert changes(BASE.replace(before, after)) == [expected]


def test_mode_and_sandbox_limits() -> None:
    assert changes(BASE, "mode: monitor\nlimits: {connections: 512, request_body_bytes: 10}\n") \
        == ["widens       policy: mode enforce -> monitor",
            "widens       policy: limits.connections 256 -> 512",
            "narrows      policy: limits.request_body_bytes 104857600 -> 10"]


def test_kubernetes_namespaces_that_may_use_the_policy() -> None:
    assert changes(BASE, "kubernetes: {namespaces: [team-a, team-b]}\n") == \
        ["widens       policy: pods of Kubernetes namespaces team-a, team-b may use it"]
    assert [str(c) for c in diff(policy(BASE, "kubernetes: {namespaces: [team-a, team-b]}\n"),
                                 policy(BASE, "kubernetes: {namespaces: [team-b, team-c]}\n"))] \
        == ["widens       policy: pods of Kubernetes namespaces team-c may use it",
            "narrows      policy: pods of Kubernetes namespaces team-a may not"]


def test_rules_added_and_removed_and_deny_rules_read_backwards() -> None:
    deny = "  - id: no\n    action: deny\n    hosts: [gist.github.com]\n"
    assert changes(BASE + deny) == ["narrows      rule no: new deny rule for gist.github.com"]
    assert changes(BASE, old=BASE + deny) == \
        ["widens       rule no: removed deny rule for gist.github.com"]
    assert changes(BASE + deny.replace("gist.github.com", "'.github.com'"), old=BASE + deny) == \
        ["narrows      rule no: hosts gist.github.com -> .github.com"]
    assert changes("") == [
        "narrows      rule api: removed allow rule for api.github.com",
        "credentials  rule api: removed injection of GITHUB_TOKEN:bearer for api.github.com",
    ]


def test_a_more_specific_rule_taking_requests_over_changes_credentials() -> None:
    broad = "  - id: broad\n    hosts: ['*.github.com']\n    protocols: [https]\n" \
            "    limits: {requests_per_minute: 60}\n"
    specific = "  - id: api\n    hosts: [api.github.com]\n    protocols: [https]\n" \
               "    inject: [{secret: GITHUB_TOKEN, as: bearer}]\n"
    assert changes(broad + specific, old=broad) == [
        "widens       rule api: new allow rule for api.github.com",
        "credentials  rule api: new injection of GITHUB_TOKEN:bearer for api.github.com",
        "credentials  rule api: now decides GET https://api.github.com:443/ (was rule broad): "
        "inject none -> GITHUB_TOKEN:bearer",
        "widens       rule api: now decides GET https://api.github.com:443/ (was rule broad): "
        "limits.requests_per_minute 60 -> none",
    ]


def test_no_change() -> None:
    assert changes(BASE) == []


def test_budgets_by_rate() -> None:
    budget = "    budget: {bytes_up: 10MiB, requests: 100, per: 1h}\n"
    with_budget = BASE + budget
    assert changes(with_budget) == [
        "narrows      rule api: budget.bytes_up none -> 10485760 per 1h",
        "narrows      rule api: budget.requests none -> 100 per 1h"]
    assert changes(BASE, old=with_budget) == [
        "widens       rule api: budget.bytes_up 10485760 per 1h -> none",
        "widens       rule api: budget.requests 100 per 1h -> none"]
    assert changes(BASE + "    budget: {bytes_up: 10MiB, requests: 2400, per: 1d}\n",
                   old=with_budget) == [       # the same rate of requests, a larger burst
        "narrows      rule api: budget.bytes_up 10485760 per 1h -> 10485760 per 1d",
        "widens       rule api: budget.requests 100 per 1h -> 2400 per 1d"]
    assert changes(BASE, "budget: {requests: 5, per: 1d}\n") == [
        "narrows      policy: budget.requests none -> 5 per 1d"]
