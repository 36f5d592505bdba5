"""The overview of egress: attempts per host over time, top denials, per sandbox and policy,
grouped in the database (SQLite and PostgreSQL alike)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy.engine import Engine

from gateway.audit.overview import OTHER, edges, overview
from gateway.audit.query import AuditFilter
from gateway.audit.writer import AuditWriter

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def rows(engine: Engine, spec: list[tuple[int, str, str, str, str, str]]) -> None:
    """(minutes ago, host, decision, reason, sandbox, policy)"""
    writer = AuditWriter(engine, gateway_id="gw")
    writer.start()
    for ago, host, decision, reason, sandbox, policy in spec:
        writer.record(time=NOW - timedelta(minutes=ago, seconds=-1), decision=decision,
                      reason=reason, protocol="https", host=host, port=443,
                      sandbox_id=sandbox, policy=policy)
    writer.flush()
    writer.close()


def test_edges_cut_the_range_evenly() -> None:
    assert edges(NOW - timedelta(hours=1), NOW, 4) == [
        NOW - timedelta(minutes=m) for m in (60, 45, 30, 15, 0)]


def test_attempts_per_host_over_time_and_the_tables(engine: Engine) -> None:
    rows(engine, [
        (50, "api.test", "allow", "allowed_by_rule", "sb1", "web"),
        (50, "api.test", "allow", "allowed_by_rule", "sb1", "web"),
        (20, "api.test", "deny", "budget_exceeded", "sb1", "web"),
        (20, "evil.test", "deny", "no_matching_rule", "sb2", "web"),
        (5, "evil.test", "deny", "no_matching_rule", "sb2", "strict"),
        (5, "mon.test", "would_deny", "no_matching_rule", "sb2", "strict"),
        (5, "mon.test", "error", "upstream_error", "sb2", "strict"),
        (90, "old.test", "deny", "no_matching_rule", "sb1", "web"),    # before the range
    ])
    result = overview(engine, AuditFilter(since=NOW - timedelta(hours=1), until=NOW),
                      buckets=4)
    assert result["buckets"] == ["2026-11-30T11:00:00Z", "2026-11-30T11:15:00Z",
                                 "2026-11-30T11:30:00Z", "2026-11-30T11:45:00Z"]
    assert result["series"] == [
        {"host": "api.test", "allowed": [2, 0, 0, 0], "denied": [0, 0, 1, 0]},
        {"host": "evil.test", "allowed": [0, 0, 0, 0], "denied": [0, 0, 1, 1]},
        {"host": "mon.test", "allowed": [0, 0, 0, 1], "denied": [0, 0, 0, 0]},
    ]
    assert result["top_denied_hosts"] == [{"host": "evil.test", "count": 2},
                                          {"host": "api.test", "count": 1}]
    assert result["top_denied_reasons"] == [{"reason": "no_matching_rule", "count": 2},
                                            {"reason": "budget_exceeded", "count": 1}]
    assert result["per_sandbox"] == [
        {"sandbox_id": "sb2", "allowed": 1, "denied": 2, "total": 4},
        {"sandbox_id": "sb1", "allowed": 2, "denied": 1, "total": 3}]
    assert result["per_policy"] == [
        {"policy": "web", "allowed": 2, "denied": 2, "total": 4},
        {"policy": "strict", "allowed": 1, "denied": 1, "total": 3}]

    drilled = overview(engine, AuditFilter(since=NOW - timedelta(hours=1), until=NOW,
                                           policy="strict"), buckets=4)
    assert [s["host"] for s in drilled["series"]] == ["evil.test", "mon.test"]


def test_quiet_hosts_are_drawn_together(engine: Engine) -> None:
    rows(engine, [(1, f"h{i}.test", "allow", "allowed_by_rule", "sb", "p") for i in range(4)]
         + [(1, "busy.test", "deny", "no_matching_rule", "sb", "p")] * 3)
    result = overview(engine, AuditFilter(since=NOW - timedelta(hours=1), until=NOW),
                      buckets=1, hosts=3)
    assert result["series"] == [
        {"host": "busy.test", "allowed": [0], "denied": [3]},
        {"host": "h0.test", "allowed": [1], "denied": [0]},
        {"host": OTHER, "allowed": [3], "denied": [0]}]

