"""Reading MCP JSON-RPC: strict JSON, the SDK's envelope and params types, routing headers,
errors the SDK's own types accept, tools/list filtering."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st
from mcp.shared.inbound import decode_header_value, encode_header_value
from mcp_types import JSONRPCError, jsonrpc_message_adapter

from gateway.dataplane.mcp import (
    HOLD_LIMIT,
    RESPONSE,
    Unreadable,
    _decoded,
    error,
    filter_body,
    filter_message,
    header_mismatch,
    judge,
    loads,
    read_post,
)
from policies.schema import McpSpec

SPEC = McpSpec(tools=["read_*"], deny_tools=["read_secret"])


@given(st.text(max_size=40))
def test_name_headers_decode_as_the_sdk_encodes(name: str) -> None:
    encoded = encode_header_value(name)
    assert _decoded(encoded) == decode_header_value(encoded) == name


@pytest.mark.parametrize("value", ["=?base64?not base64?=", "=?base64?cmVhZF9pc3N1ZR==?=",
                                   "=?base64?/w==?=", "plain"])
def test_malformed_name_headers_decode_as_the_sdk_does(value: str) -> None:
    assert _decoded(value) == decode_header_value(value)


@pytest.mark.parametrize("text", ['{"a":1,"a":2}', '{"a":{"b":1,"b":1}}', "[NaN]",
                                  "[Infinity]", '{"a":1} x', ""])
def test_strict_json(text: str) -> None:
    with pytest.raises(Unreadable):
        loads(text)


def test_read_post_limits() -> None:
    with pytest.raises(Unreadable, match="over"):
        read_post(b" " * (HOLD_LIMIT + 1))
    assert read_post(b'{"jsonrpc":"2.0","method":"ping","id":1}')[0] is False
    assert read_post(b'[{"jsonrpc":"2.0","method":"ping","id":1}]')[0] is True


def test_judge_reads_requests_notifications_and_responses() -> None:
    call = judge({"jsonrpc": "2.0", "id": "x", "method": "tools/call",
                  "params": {"name": "read_secret", "arguments": {}}}, SPEC)
    assert (call.tool, call.id, call.refusal and call.refusal.miss) == \
        ("read_secret", "x", "tool_denied")
    note = judge({"jsonrpc": "2.0", "method": "notifications/initialized"}, SPEC)
    assert note.id is None and note.refusal is None and not note.is_request
    answer = judge({"jsonrpc": "2.0", "id": 3, "result": {"content": []}}, SPEC)
    assert answer.method == RESPONSE and answer.refusal is not None
    ping = judge({"jsonrpc": "2.0", "id": 3, "result": {}}, SPEC)
    assert ping.refusal is None


@pytest.mark.parametrize("bad_id", [1.5, True, None])
def test_an_id_the_sdk_cannot_take_makes_a_notification_as_for_the_sdk(bad_id: object) -> None:
    """The SDK's server reads such a message as a notification too; its method and tool are
    judged all the same."""
    item = judge({"jsonrpc": "2.0", "id": bad_id, "method": "tools/call",
                  "params": {"name": "read_secret"}}, SPEC)
    assert item.id is None and item.refusal is not None


@pytest.mark.parametrize("message", [
    {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": 3}},
    {"jsonrpc": "2.0", "id": 1, "Method": "tools/list", "method": "tools/call",
     "params": {"name": "read_a"}},
])
def test_judge_refuses_what_the_sdk_would_not_read(message: dict[str, object]) -> None:
    with pytest.raises(Unreadable):
        judge(message, SPEC)


def test_errors_are_what_the_sdk_reads() -> None:
    parsed = jsonrpc_message_adapter.validate_python(error(7, -32602, "no", {"a": 1}))
    assert isinstance(parsed, JSONRPCError) and parsed.id == 7 and parsed.error.data == {"a": 1}
    assert error(None, -32700, "bad")["id"] is None


def test_headers_must_agree() -> None:
    items = [judge({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                    "params": {"name": "read_a"}}, SPEC)]
    assert header_mismatch(items, False, {"mcp-method": "tools/call", "mcp-name": "read_a"},
                           SPEC) is None
    assert header_mismatch(items, False, {"mcp-name": "read_b"}, SPEC)
    assert header_mismatch(items, True, {"mcp-method": "tools/call"}, SPEC)
    assert header_mismatch(items, False, {"mcp-param-x": "1"}, SPEC) is None   # no args
    assert header_mismatch(items, False, {"mcp-param-x": "1"},
                           McpSpec(tools=["*"], args={"x": "*"}))


TOOLS = [{"name": n, "inputSchema": {"type": "object"}} for n in
         ("read_a", "read_secret", "write")]


def test_filtering() -> None:
    message = {"jsonrpc": "2.0", "id": 1, "result": {"tools": TOOLS, "nextCursor": "c"}}
    kept, removed = filter_message(message, SPEC)
    assert removed == 2 and kept["result"] == {"tools": TOOLS[:1], "nextCursor": "c"}
    assert filter_message({"jsonrpc": "2.0", "method": "x"}, SPEC)[1] == 0
    with pytest.raises(Unreadable):
        filter_message({"jsonrpc": "2.0", "id": 1, "result": {"tools": [{"x": 1}]}}, SPEC)
    body = json.dumps([message, {"jsonrpc": "2.0", "id": 2, "result": {}}]).encode()
    assert [m["id"] for m in json.loads(filter_body(body, SPEC, [error(3, 1, "x")]))] == \
        [1, 2, 3]
    untouched = b'{"jsonrpc": "2.0", "id": 2, "result": {}}'
    assert filter_body(untouched, SPEC) == untouched
