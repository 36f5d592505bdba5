"""`policy replay`: recorded requests judged by a candidate with the real matcher, grouped by
what changes."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from policies.loader import load_text
from policies.matcher import CompiledPolicy
from policies.recorded import Recorded, from_row
from policies.replay import replay, report_lines

CURRENT = """\
version: 1
name: current
rules:
  - id: api
    hosts: [api.example.com]
    methods: [GET, POST]
    paths: ["/v1/**"]
  - id: db
    hosts: [db.example.com]
    ports: [5432]
    protocols: [tcp]
"""


def policy(text: str) -> CompiledPolicy:
    return load_text(text, "p.yaml")


def row(**fields: Any) -> dict[str, Any]:
    base = {"time": "2026-11-30T12:00:00.000000Z", "decision": "allow",
            "reason": "allowed_by_rule", "protocol": "h2", "scheme": "https",
            "host": "api.example.com", "port": 443, "method": "GET", "path": "/v1/items",
            "query": None, "request_headers": json.dumps(["accept: */*", "authorization"]),
            "secrets": None, "policy": "current", "rule": "api", "sandbox_id": "sb1"}
    return {**base, **fields}


def records(*rows: dict[str, Any]) -> list[Recorded]:
    found = [from_row(r) for r in rows]
    return [r for r in found if r is not None]


RECORDING = records(
    row(), row(path="/v1/items/2"), row(method="POST", path="/v1/items"),
    row(protocol="tcp", scheme=None, host="db.example.com", port=5432, method=None, path=None,
        rule="db"),
    row(decision="deny", reason="no_matching_rule", host="new.example.com", rule=None),
    row(decision="deny", reason="no_matching_rule", method="DELETE", rule=None),
)


def test_the_same_policy_changes_nothing() -> None:
    result = replay(policy(CURRENT), RECORDING)
    assert (result.replayed, result.unchanged) == (6, 6)
    assert not result.newly_denied and not result.newly_allowed


def test_a_narrowed_candidate_reports_exactly_the_removed_requests() -> None:
    narrowed = CURRENT.replace("methods: [GET, POST]", "methods: [GET]")
    result = replay(policy(narrowed), RECORDING)
    assert result.denied_count == 1 and result.allowed_count == 0
    (group,) = result.newly_denied.values()
    assert (group.host, group.recorded_rule, group.rule, group.reason) == \
        ("api.example.com", "api", None, "no_matching_rule")
    assert group.samples == ["POST /v1/items"]
    lines = report_lines(result)
    assert lines[0].startswith("replayed 6 recorded request(s) against current@")
    assert lines[0].endswith(": 1 newly denied, 0 newly allowed, 5 unchanged")
    assert lines[1:] == ["newly denied:",
                         "      1  api.example.com  rule=-  reason=no_matching_rule  (was api)",
                         "         POST /v1/items"]


def test_a_widened_candidate_reports_what_it_newly_allows() -> None:
    widened = CURRENT + "  - id: new\n    hosts: [new.example.com]\n"
    result = replay(policy(widened), RECORDING)
    assert result.denied_count == 0
    (group,) = result.newly_allowed.values()
    assert (group.host, group.rule, group.count) == ("new.example.com", "new", 1)
    assert result.as_json()["newly_allowed"][0]["samples"] == ["GET /v1/items"]


def test_a_deny_rule_and_a_name_out_of_dns_count_as_denials() -> None:
    denied = CURRENT + "  - id: no-db\n    action: deny\n    hosts: [db.example.com]\n"
    result = replay(policy(denied), RECORDING)
    (group,) = result.newly_denied.values()
    assert (group.host, group.rule, group.reason, group.samples) == \
        ("db.example.com", "no-db", "denied_by_rule", ["tcp:5432"])


def test_monitor_recordings_count_as_passed_and_a_monitor_candidate_as_enforced() -> None:
    monitored = records(row(decision="would_deny", reason="no_matching_rule", rule=None))
    empty = policy("version: 1\nname: empty\nmode: monitor\nrules: []\n")
    assert replay(empty, monitored).denied_count == 1
    assert replay(policy(CURRENT), monitored).denied_count == 0


def test_rows_that_record_no_policy_judgement_are_left_out() -> None:
    assert from_row(row(protocol="dns", method="A", port=53)) is None
    assert from_row(row(protocol="token")) is None
    assert from_row(row(decision="deny", reason="secret_exfil_attempt")) is None
    assert from_row(row(decision="deny", reason="sni_mismatch")) is None
    failed = from_row(row(decision="error", reason="upstream_error"))
    assert failed is not None and failed.passed


def test_a_recorded_request_as_the_gateway_asked_it() -> None:
    record = from_row(row(query="page=2&q=x", secrets="GH_TOKEN"))
    assert record is not None
    request = record.request()
    assert (request.protocol, request.host, request.port) == ("https", "api.example.com", 443)
    assert request.query == {"page": ["2"], "q": ["x"]}
    assert request.headers == {"accept": ["*/*"]}   # values the audit log keeps only
    assert record.secrets == ("GH_TOKEN",)
    assert record.time == datetime(2026, 11, 30, 12)
    literal = from_row(row(host="203.0.113.9", scheme="http", protocol="http"))
    assert literal is not None
    assert literal.request().host is None and str(literal.request().address) == "203.0.113.9"


def test_a_recorded_path_cannot_write_to_the_reviewers_terminal() -> None:
    narrowed = CURRENT.replace("methods: [GET, POST]", "methods: [GET]")
    recorded = records(row(method="POST", path="/v1/\x1b[2K\x1b[1Anewly allowed:\u2028"))
    (group,) = replay(policy(narrowed), recorded).newly_denied.values()
    assert group.samples == ["POST /v1/\\x1b[2K\\x1b[1Anewly allowed:\\u2028"]
