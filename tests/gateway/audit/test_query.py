"""Reading the audit log: filters, cursor, summary and export formats."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

from sqlalchemy.engine import Engine

from gateway.audit import query as audit_query
from gateway.audit.chain import verify
from gateway.audit.query import spent_since
from gateway.audit.writer import AuditWriter
from tests.gateway.audit.conftest import write


def test_filters_cursor_and_summary(engine: Engine) -> None:
    write(engine, 12, secrets="API_TOKEN,OTHER")
    f = audit_query.AuditFilter
    assert len(audit_query.latest(engine, f(host="h1.test"))) == 3
    assert len(audit_query.latest(engine, f(host="*.test"))) == 12
    assert len(audit_query.latest(engine, f(host="h*"))) == 12
    assert {r.decision for r in audit_query.latest(engine, f(decision="deny"))} == {"deny"}
    assert len(audit_query.latest(engine, f(status=403))) == 4
    assert len(audit_query.latest(engine, f(rule="rule1", sandbox_id="sb1"))) == 6
    assert len(audit_query.latest(engine, f(secret="OTHER"))) == 12
    assert audit_query.latest(engine, f(secret="API")) == []
    since = audit_query.parse_time("1h")
    assert len(audit_query.latest(engine, f(since=since))) == 12
    assert audit_query.latest(engine, f(until=since)) == []
    seen, cursor = [], None
    while True:
        rows, cursor = audit_query.page(engine, f(after_id=cursor, limit=5))
        seen += [r.seq for r in rows]
        if cursor is None:
            break
    assert seen == list(range(1, 13))
    summary = audit_query.summary(engine, f())
    assert summary["per_decision"] == [{"decision": "allow", "count": 8},
                                       {"decision": "deny", "count": 4}]
    assert {r["host"] for r in summary["top_denied_hosts"]} == {"h0.test", "h3.test",
                                                               "h2.test", "h1.test"}


def test_export_shapes(engine: Engine) -> None:
    write(engine, 2)
    rows = [r.as_json() for r in audit_query.latest(engine, audit_query.AuditFilter())]
    csv_text = audit_query.to_csv(rows)
    assert csv_text.splitlines()[0].startswith("id,time,gateway_id,seq,")
    assert len(csv_text.splitlines()) == 3
    ocsf = audit_query.to_ocsf(rows[0])
    assert (ocsf["class_uid"], ocsf["category_uid"], ocsf["disposition"]) == \
        (4002, 4, "Blocked")
    assert ocsf["http_request"]["url"]["hostname"] == "h0.test"
    assert ocsf["metadata"]["uid"] == "gw1:1"
    assert isinstance(ocsf["time"], int) and abs(ocsf["time"] / 1000 - time.time()) < 60


def test_mcp_rows_by_tool_and_method(engine: Engine) -> None:
    write(engine, 2, mcp_method="tools/call", mcp_tool="read_issue")
    write(engine, 1, mcp_method="tools/list", gateway_id="gw2")
    rows = audit_query.latest(engine, audit_query.AuditFilter(mcp_tool="read_issue"))
    assert [(r.mcp_method, r.mcp_tool) for r in rows] == [("tools/call", "read_issue")] * 2
    listed = audit_query.latest(engine, audit_query.AuditFilter(mcp_method="tools/list"))
    assert len(listed) == 1 and listed[0].mcp_tool is None
    assert verify(engine).ok


NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def test_what_a_budget_had_spent_is_read_from_the_log(engine: Engine) -> None:
    writer = AuditWriter(engine, gateway_id="gw")
    writer.start()
    for ago, decision, protocol, rule, size in [
            (5, "allow", "http", "up", 100), (5, "allow", "http", "up", 50),
            (5, "would_deny", "h2", None, 7), (5, "deny", "http", "up", 999),
            (5, "allow", "dns", "up", 0), (5, "allow", "token", None, 0),
            (90, "allow", "http", "up", 1000)]:            # before the window
        writer.record(time=NOW - timedelta(minutes=ago), decision=decision, reason="r",
                      protocol=protocol, sandbox_id="sb", rule=rule, bytes_up=size)
    writer.record(time=NOW, decision="allow", reason="r", protocol="http", sandbox_id="other",
                  rule="up", bytes_up=5)
    writer.flush()
    writer.close()
    since = NOW - timedelta(hours=1)
    assert spent_since(engine, "sb", "up", since) == (150, 2)
    assert spent_since(engine, "sb", None, since) == (157, 3)
    assert spent_since(engine, "nobody", None, since) == (0, 0)
