"""AuditTrail: one row per request and stream, built from the flow and its verdict."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from mitmproxy import http
from mitmproxy.test import tflow

from gateway.dataplane.addons.audit_trail import AuditTrail
from gateway.dataplane.addons.http_policy import HttpPolicy
from gateway.dataplane.addons.tcp_policy import TcpPolicy
from tests.doubles import data_plane
from tests.gateway.dataplane.addons.conftest import Through, connect, request

POLICY = """
version: 1
name: p
rules:
  - {id: api, hosts: [api.example.test]}
  - {id: db, hosts: [db.example.test], protocols: [tcp]}
"""
ANSWERS = {"api.example.test": ["203.0.113.10"], "db.example.test": ["203.0.113.20"]}


def test_an_http_row(tmp_path: Path) -> None:
    plane = data_plane(tmp_path, POLICY, answers=ANSWERS)
    flow = request(connect(plane, "api.example.test"), "POST",
                   "https://api.example.test/v1/items?token=abc&page=2",
                   headers=[("content-type", "text/plain"), ("x-custom", "hidden")],
                   body=b"hello")
    asyncio.run(HttpPolicy(plane.state).requestheaders(flow))
    flow.response = http.Response.make(201, b"created!", {"server": "t"})
    asyncio.run(AuditTrail(plane.state).response(flow))
    (row,) = plane.rows
    assert {k: row[k] for k in ("decision", "reason", "rule", "protocol", "method", "host",
                                "port", "path", "query", "status", "bytes_up",
                                "bytes_down", "owner")} == {
        "decision": "allow", "reason": "allowed_by_rule", "rule": "api", "protocol": "http",
        "method": "POST", "host": "api.example.test", "port": 443, "path": "/v1/items",
        "query": "token=[redacted]&page=2", "status": 201, "bytes_up": 5, "bytes_down": 8,
        "owner": "tok"}
    assert json.loads(row["request_headers"]) == ["host", "content-type: text/plain",
                                                  "x-custom", "content-length: 5"]


def test_an_upstream_failure_is_an_error_row(tmp_path: Path) -> None:
    plane = data_plane(tmp_path, POLICY, answers=ANSWERS)
    flow = request(connect(plane, "api.example.test"), "GET", "https://api.example.test/")
    asyncio.run(HttpPolicy(plane.state).requestheaders(flow))
    flow.error = tflow.terr("connection reset")
    asyncio.run(AuditTrail(plane.state).error(flow))
    (row,) = plane.rows
    assert (row["decision"], row["reason"], row["error"]) == ("error", "upstream_error",
                                                              "connection reset")


def test_a_stream_row_counts_both_directions(tmp_path: Path) -> None:
    plane = data_plane(tmp_path, POLICY, answers=ANSWERS)
    conn = connect(plane, "db.example.test", 5432, tls=False)
    flow = tflow.ttcpflow(client_conn=conn)
    asyncio.run(TcpPolicy(plane.state).tcp_start(flow))
    asyncio.run(AuditTrail(plane.state).tcp_end(flow))
    (row,) = plane.rows
    up = sum(len(m.content) for m in flow.messages if m.from_client)
    assert (row["protocol"], row["host"], row["port"], row["bytes_up"]) == \
        ("tcp", "db.example.test", 5432, up)


def test_one_row_per_json_rpc_message_of_a_batch(tmp_path: Path) -> None:
    """Each message of a batch gets its own row with its own decision, the method and the
    tool; the exchange's bytes are counted once, on the first row."""
    policy = POLICY + "  - {id: mcp, hosts: [mcp.example.test], mcp: {tools: [read_*]}}\n"
    plane = data_plane(tmp_path, policy, answers={"mcp.example.test": ["203.0.113.30"]})
    calls = [{"jsonrpc": "2.0", "id": i, "method": "tools/call",
              "params": {"name": name, "arguments": {}}}
             for i, name in enumerate(["read_issue", "delete_repo"])]
    body = json.dumps([*calls, {"jsonrpc": "2.0", "method": "notifications/initialized"}])
    flow = request(connect(plane, "mcp.example.test"), "POST", "https://mcp.example.test/mcp",
                   headers=[("content-type", "application/json")], body=body.encode())
    through = Through(plane)
    through.request(flow)
    through.response(flow, http.Response.make(200, b"[]", {"content-type": "application/json"}))
    asyncio.run(AuditTrail(plane.state).response(flow))
    rows = [(r["mcp_method"], r["mcp_tool"], r["decision"], r["reason"], r["rule"])
            for r in plane.rows]
    assert rows == [("tools/call", "read_issue", "allow", "allowed_by_rule", "mcp"),
                    ("tools/call", "delete_repo", "deny", "mcp_tool_denied", "mcp"),
                    ("notifications/initialized", None, "allow", "allowed_by_rule", "mcp")]
    assert [r["bytes_up"] > 0 for r in plane.rows] == [True, False, False]
