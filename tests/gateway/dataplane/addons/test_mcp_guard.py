"""McpGuard: JSON-RPC of rules with `mcp:` judged message by message, refusals answered as
JSON-RPC errors, unreadable bodies refused, tools/list answers filtered (held JSON, streamed
SSE), batches split and their answers merged; monitor mode lets everything pass."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mcp_types import JSONRPCError, jsonrpc_message_adapter
from mitmproxy import http

from gateway.dataplane.mcp_exchange import MCP_KEY, McpExchange
from gateway.dataplane.state import METADATA_KEY
from tests.doubles import Plane, data_plane
from tests.gateway.dataplane.addons.conftest import Through, connect, request

POLICY = """
version: 1
name: p
mode: {mode}
rules:
  - id: tools
    hosts: [mcp.example.test]
    mcp: {{tools: ["read_*", "list_*"], deny_tools: ["read_secret"], args: {{repo: "octo/*"}}}}
  - {{id: plain, hosts: [plain.example.test]}}
"""
TOOLS = {"tools": [{"name": n, "inputSchema": {"type": "object"}}
                   for n in ("read_issue", "read_secret", "delete_repo")]}


def make(tmp_path: Path, mode: str = "enforce") -> Plane:
    return data_plane(tmp_path, POLICY.format(mode=mode),
                      answers={"mcp.example.test": ["203.0.113.10"],
                               "plain.example.test": ["203.0.113.11"]})


@pytest.fixture
def plane(tmp_path: Path) -> Iterator[Plane]:
    plane = make(tmp_path)
    yield plane
    plane.close()


def call(tool: str, id_: int = 1, **arguments: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": id_, "method": "tools/call",
            "params": {"name": tool, "arguments": arguments}}


def post(plane: Plane, body: Any, host: str = "mcp.example.test",
         headers: list[tuple[str, str]] | None = None) -> http.HTTPFlow:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return request(connect(plane, host), "POST", f"https://{host}/mcp", body=raw,
                   headers=[("content-type", "application/json"),
                            ("accept-encoding", "gzip"), *(headers or [])])


def answer(flow: http.HTTPFlow) -> Any:
    assert flow.response is not None
    return json.loads(flow.response.content or b"")


def reply(body: Any, media: str = "application/json", framed: bool = True) -> http.Response:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    response = http.Response.make(200, raw, {"content-type": media})
    if not framed:      # streamed by Bodies, as a chunked answer is
        del response.headers["content-length"]
    return response


def test_an_allowed_call_goes_out_as_sent_without_accept_encoding(plane: Plane) -> None:
    body = json.dumps(call("read_issue", repo="octo/hello")).encode()
    flow = post(plane, body)
    assert Through(plane).request(flow) == body
    assert flow.response is None and "accept-encoding" not in flow.request.headers
    exchange = flow.metadata[MCP_KEY]
    assert exchange.calls[0][:2] == ("tools/call", "read_issue")


@pytest.mark.parametrize(("tool", "arguments", "words"), [
    ("read_secret", {"repo": "octo/x"}, "deny_tools 'read_secret'"),
    ("delete_repo", {"repo": "octo/x"}, "matches none of tools"),
    ("read_issue", {"repo": "evil/x"}, "argument 'repo' does not match 'octo/*'"),
    ("read_issue", {}, "argument 'repo' is missing"),
    ("read_issue", {"repo": 7}, "argument 'repo' is not a string"),
], ids=["deny_tools", "not listed", "argument", "missing", "not a string"])
def test_a_refused_call_is_answered_with_a_json_rpc_error(plane: Plane, tool: str,
                                                          arguments: dict[str, Any],
                                                          words: str) -> None:
    flow = post(plane, call(tool, 41, **arguments))
    assert Through(plane).request(flow) == b""
    assert flow.response is not None and flow.response.status_code == 200
    parsed = jsonrpc_message_adapter.validate_json(flow.response.content or b"")
    assert isinstance(parsed, JSONRPCError) and parsed.id == 41
    assert parsed.error.code == -32602 and words in parsed.error.message
    assert parsed.error.data["reason"] == "mcp_tool_denied"
    assert parsed.error.data["rule"] == "tools"
    assert str(flow.metadata[METADATA_KEY].decision.reason) == "mcp_tool_denied"


def test_methods_beyond_the_base_need_methods(plane: Plane) -> None:
    flow = post(plane, {"jsonrpc": "2.0", "id": 2, "method": "resources/read",
                        "params": {"uri": "file:///etc/passwd"}})
    Through(plane).request(flow)
    error = answer(flow)["error"]
    assert error["code"] == -32601 and error["data"]["reason"] == "mcp_method_denied"
    listing = post(plane, {"jsonrpc": "2.0", "id": 3, "method": "tools/list"})
    Through(plane).request(listing)
    assert listing.response is None


def test_a_refused_notification_gets_403_and_no_reply(plane: Plane) -> None:
    flow = post(plane, {"jsonrpc": "2.0", "method": "notifications/roots/list_changed"})
    Through(plane).request(flow)
    assert flow.response is not None and flow.response.status_code == 403
    assert answer(flow)["id"] is None


@pytest.mark.parametrize("body", [
    b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read_issue",'
    b'"name":"delete_repo","arguments":{"repo":"octo/x"}}}',
    b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read_issue",'
    b'"Name":"delete_repo","arguments":{"repo":"octo/x"}}}',
    b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read_issue",'
    b'"arguments":{"repo":"octo/x","Repo":"evil/x"}}}',
    b'{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"n":NaN}}',
    b'{"jsonrpc":"2.0","id":1,"method":"tools/list"} {}',
    b'\xff\xfe{}',
    b'[]',
    b'[1]',
    b'{"jsonrpc":"1.0","id":1,"method":"tools/list"}',
    b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"arguments":{}}}',
    b"[" * 100000 + b"]" * 100000,
], ids=["duplicate name", "name in two cases", "argument in two cases", "NaN",
        "trailing data", "not UTF-8", "empty batch", "not an object", "not 2.0",
        "call without a name", "deep nesting"])
def test_what_cannot_be_read_is_refused(plane: Plane, body: bytes) -> None:
    flow = post(plane, body)
    Through(plane).request(flow)
    assert flow.response is not None and flow.response.status_code == 400
    assert answer(flow)["error"]["code"] in (-32700, -32600, -32602)
    assert str(flow.metadata[METADATA_KEY].decision.reason) == "mcp_unparseable"


@pytest.mark.parametrize("headers", [
    [("mcp-method", "tools/list")],
    [("mcp-name", "delete_repo")],
    [("mcp-name", "=?base64?ZGVsZXRlX3JlcG8=?=")],
    [("mcp-param-repo", "octo/x")],
], ids=["method", "name", "base64 name", "param with args"])
def test_routing_headers_must_agree_with_the_body(plane: Plane,
                                                  headers: list[tuple[str, str]]) -> None:
    flow = post(plane, call("read_issue", repo="octo/x"), headers=headers)
    Through(plane).request(flow)
    assert flow.response is not None and flow.response.status_code == 400


def test_agreeing_routing_headers_pass(plane: Plane) -> None:
    flow = post(plane, call("read_issue", repo="octo/x"),
                headers=[("mcp-method", "tools/call"),
                         ("mcp-name", "=?base64?cmVhZF9pc3N1ZQ==?=")])
    Through(plane).request(flow)
    assert flow.response is None


@pytest.mark.parametrize("headers", [
    [("transfer-encoding", "chunked")],
    [("content-encoding", "gzip")],
], ids=["no length", "compressed"])
def test_a_body_that_cannot_be_held_is_refused(plane: Plane,
                                               headers: list[tuple[str, str]]) -> None:
    flow = post(plane, b"{}", headers=headers)
    Through(plane).request(flow)
    assert str(flow.metadata[METADATA_KEY].decision.reason) == "mcp_unparseable"
    assert flow.error is not None or (flow.response is not None
                                      and flow.response.status_code == 400)


def test_other_http_methods_are_refused_get_and_delete_pass(plane: Plane) -> None:
    conn = connect(plane, "mcp.example.test")
    put = request(conn, "PUT", "https://mcp.example.test/mcp", body=b"{}")
    Through(plane).request(put)
    assert put.response is not None and put.response.status_code == 400
    for method in ("GET", "DELETE"):
        flow = request(connect(plane, "mcp.example.test"), method,
                       "https://mcp.example.test/mcp")
        Through(plane).request(flow)
        assert flow.response is None


def test_a_batch_is_split_and_its_answer_merged(plane: Plane) -> None:
    through = Through(plane)
    flow = post(plane, [call("read_issue", 1, repo="octo/a"), call("delete_repo", 2),
                        {"jsonrpc": "2.0", "method": "notifications/initialized"},
                        call("read_secret", 3, repo="octo/a")])
    sent = json.loads(through.request(flow))
    assert sent == [call("read_issue", 1, repo="octo/a"),
                    {"jsonrpc": "2.0", "method": "notifications/initialized"}]
    got = json.loads(through.response(flow, reply([{"jsonrpc": "2.0", "id": 1,
                                                    "result": {"content": []}}])))
    assert [m["id"] for m in got] == [1, 2, 3]
    assert "error" in got[1] and "error" in got[2]
    calls = [(m, t, str(d.verdict)) for m, t, d in flow.metadata[MCP_KEY].calls]
    assert calls == [("tools/call", "read_issue", "allow"), ("tools/call", "delete_repo", "deny"),
                     ("notifications/initialized", None, "allow"),
                     ("tools/call", "read_secret", "deny")]


def test_one_allowed_message_of_a_batch_goes_out_alone(plane: Plane) -> None:
    through = Through(plane)
    flow = post(plane, [call("read_issue", 1, repo="octo/a"), call("delete_repo", 2)])
    assert json.loads(through.request(flow)) == call("read_issue", 1, repo="octo/a")
    got = json.loads(through.response(flow, reply({"jsonrpc": "2.0", "id": 1,
                                                   "result": {"content": []}})))
    assert [m["id"] for m in got] == [1, 2]


def test_a_batch_whose_rest_is_notifications_gets_the_errors_instead_of_202(
        plane: Plane) -> None:
    through = Through(plane)
    flow = post(plane, [{"jsonrpc": "2.0", "method": "notifications/initialized"},
                        call("delete_repo", 9)])
    through.request(flow)
    got = through.response(flow, http.Response.make(202, b"", {"content-length": "0"}))
    assert flow.response is not None and flow.response.status_code == 200
    assert [m["id"] for m in json.loads(got)] == [9]


def test_a_json_tools_list_answer_keeps_only_allowed_tools(plane: Plane) -> None:
    through = Through(plane)
    flow = post(plane, {"jsonrpc": "2.0", "id": 5, "method": "tools/list"})
    through.request(flow)
    got = json.loads(through.response(flow, reply({"jsonrpc": "2.0", "id": 5,
                                                   "result": TOOLS})))
    assert [t["name"] for t in got["result"]["tools"]] == ["read_issue"]
    assert flow.response is not None
    assert flow.response.headers["content-length"] == str(len(flow.response.raw_content or b""))


def test_an_sse_tools_list_answer_is_filtered_as_it_streams(plane: Plane) -> None:
    through = Through(plane)
    flow = post(plane, {"jsonrpc": "2.0", "id": 5, "method": "tools/list"})
    through.request(flow)
    stream = (b": keep-alive\r\nevent: message\r\nid: 7\r\ndata: " +
              json.dumps({"jsonrpc": "2.0", "id": 5, "result": TOOLS}).encode() + b"\r\n\r\n")
    got = through.response(flow, reply(stream, "text/event-stream", framed=False),
                           chunks=[stream[:40], stream[40:97], stream[97:]])
    events = [line for line in got.decode().split("\n") if line.startswith("data: ")]
    assert len(events) == 1
    assert [t["name"] for t in json.loads(events[0][6:])["result"]["tools"]] == ["read_issue"]
    assert "id: 7" in got.decode() and flow.metadata[MCP_KEY].hidden == 2


def test_a_get_stream_is_read_too(plane: Plane) -> None:
    through = Through(plane)
    flow = request(connect(plane, "mcp.example.test"), "GET", "https://mcp.example.test/mcp")
    through.request(flow)
    stream = b"data: " + json.dumps({"jsonrpc": "2.0", "id": 5, "result": TOOLS}).encode() + \
        b"\n\n"
    got = through.response(flow, reply(stream, "text/event-stream", framed=False))
    assert b"read_secret" not in got and b"read_issue" in got


def test_an_unreadable_sse_event_cuts_a_stream_that_must_be_read(plane: Plane) -> None:
    through = Through(plane)
    flow = request(connect(plane, "mcp.example.test"), "GET", "https://mcp.example.test/mcp")
    through.request(flow)
    stream = b'data: {"result": {"tools": [], "tools": [{"name": "read_secret"}]}}\n\n'
    got = through.response(flow, reply(stream, "text/event-stream", framed=False))
    assert got == b"" and through.cut == [flow]
    assert str(flow.metadata[METADATA_KEY].decision.reason) == "mcp_unparseable"


def test_answers_to_other_calls_pass_untouched(plane: Plane) -> None:
    through = Through(plane)
    flow = post(plane, call("read_issue", 1, repo="octo/a"))
    through.request(flow)
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "result": {"content": [], "tools": 3}})
    assert through.response(flow, reply(body.encode())) == body.encode()


def test_a_rule_without_mcp_is_not_looked_into(plane: Plane) -> None:
    body = json.dumps(call("delete_repo")).encode()
    flow = post(plane, body, host="plain.example.test")
    assert Through(plane).request(flow) == body
    assert MCP_KEY not in flow.metadata


def test_monitor_mode_lets_refused_calls_through_as_would_deny(tmp_path: Path) -> None:
    plane = make(tmp_path, "monitor")
    try:
        flow = post(plane, call("delete_repo"))
        assert Through(plane).request(flow) != b"" and flow.response is None
        exchange = flow.metadata[MCP_KEY]
        assert isinstance(exchange, McpExchange)
        assert str(exchange.calls[0][2].verdict) == "would_deny"
        junk = post(plane, b"not json")
        assert Through(plane).request(junk) == b"not json" and junk.response is None
    finally:
        plane.close()
