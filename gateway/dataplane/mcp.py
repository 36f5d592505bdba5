"""JSON-RPC as an MCP client posts it over streamable HTTP, and as the server answers it, read
with the MCP SDK's types (mcp_types) and judged by a rule's `mcp:` (policies.mcp).

The JSON is read strictly: a duplicated key (in any object), keys of the envelope or its
params that differ only in case, NaN or Infinity, invalid UTF-8 or trailing bytes make a body
unreadable, and an unreadable body is refused, never passed: a server whose JSON parser
picks another of two `name`s than ours would otherwise run a tool the policy never saw.
A body is held whole to be read, up to `HOLD_LIMIT`.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from mcp_types import (
    INVALID_PARAMS,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    PARSE_ERROR,
    CallToolRequestParams,
    ErrorData,
    JSONRPCError,
    JSONRPCNotification,
    JSONRPCRequest,
    JSONRPCResponse,
    ListToolsResult,
    RequestId,
    jsonrpc_message_adapter,
)
from pydantic import ValidationError

from gateway.dataplane.mcp_exchange import HOLD_LIMIT
from policies.mcp import (
    CALL,
    McpMiss,
    McpRefusal,
    check_call,
    check_method,
    check_response,
    tool_visible,
)
from policies.schema import McpSpec

RESPONSE = "response"      # the audit's method for a JSON-RPC response the client posts
METHOD_HEADER, NAME_HEADER, PARAM_HEADER = "mcp-method", "mcp-name", "mcp-param-"
_B64 = re.compile(r"=\?base64\?(.*)\?=")
CODES = {McpMiss.TOOL_NOT_LISTED: INVALID_PARAMS, McpMiss.TOOL_DENIED: INVALID_PARAMS,
         McpMiss.ARGUMENT: INVALID_PARAMS, McpMiss.METHOD: METHOD_NOT_FOUND,
         McpMiss.RESPONSE: INVALID_REQUEST}


class Unreadable(ValueError):
    """Not JSON-RPC the gateway can read; `code` is the JSON-RPC error code to answer with."""

    def __init__(self, text: str, code: int = INVALID_REQUEST) -> None:
        super().__init__(text)
        self.code = code


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    data: dict[str, Any] = {}
    for key, value in pairs:
        if key in data:
            raise Unreadable(f"key {key[:50]!r} appears twice in one object", PARSE_ERROR)
        data[key] = value
    return data


def _constant(name: str) -> Any:
    raise Unreadable(f"{name} is not JSON", PARSE_ERROR)


def loads(data: bytes | str) -> Any:
    """JSON, strictly (see the module docstring). Raises Unreadable."""
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
        return json.loads(text, object_pairs_hook=_pairs, parse_constant=_constant)
    except UnicodeDecodeError:
        raise Unreadable("the body is not UTF-8", PARSE_ERROR) from None
    except RecursionError:
        raise Unreadable("the JSON nests too deeply", PARSE_ERROR) from None
    except json.JSONDecodeError as e:
        raise Unreadable(f"not JSON: {e.msg} at {e.pos}", PARSE_ERROR) from None


def dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def _one_spelling(data: Mapping[str, Any], where: str) -> None:
    seen: dict[str, str] = {}
    for key in data:
        other = seen.setdefault(key.lower(), key)
        if other != key:
            raise Unreadable(f"{where} has both {other!r} and {key!r}")


@dataclass
class Item:
    """One JSON-RPC message of a POST, as received, with what the rule makes of it."""

    raw: dict[str, Any]
    method: str                 # the JSON-RPC method, or RESPONSE
    id: RequestId | None        # of a request
    tool: str | None = None     # of a tools/call
    refusal: McpRefusal | None = None

    @property
    def is_request(self) -> bool:
        return self.id is not None and self.method != RESPONSE


def read_post(body: bytes) -> tuple[bool, list[dict[str, Any]]]:
    """(is it a batch, its messages as plain data). Raises Unreadable."""
    if len(body) > HOLD_LIMIT:
        raise Unreadable(f"a JSON-RPC body over {HOLD_LIMIT} bytes is not read")
    data = loads(body)
    batch = isinstance(data, list)
    messages = data if batch else [data]
    if not messages or not all(isinstance(m, dict) for m in messages):
        raise Unreadable("a JSON-RPC body is one message object or a non-empty array of them")
    return batch, messages


def judge(raw: dict[str, Any], spec: McpSpec) -> Item:
    """Read one message with the SDK's envelope types and judge it. Raises Unreadable."""
    _one_spelling(raw, "the JSON-RPC message")
    try:
        message = jsonrpc_message_adapter.validate_python(raw, by_name=False)
    except ValidationError:
        raise Unreadable("not a JSON-RPC 2.0 request, notification or response") from None
    if isinstance(message, JSONRPCResponse | JSONRPCError):
        empty = isinstance(message, JSONRPCResponse) and not message.result
        return Item(raw, RESPONSE, None, refusal=check_response(spec, empty))
    assert isinstance(message, JSONRPCRequest | JSONRPCNotification)
    request_id = message.id if isinstance(message, JSONRPCRequest) else None
    if message.method != CALL:
        return Item(raw, message.method, request_id,
                    refusal=check_method(spec, message.method))
    _one_spelling(message.params or {}, "tools/call params")
    try:
        params = CallToolRequestParams.model_validate(message.params or {}, by_name=False)
    except ValidationError:
        raise Unreadable("tools/call params are not {name, arguments}", INVALID_PARAMS) from None
    arguments = params.arguments or {}
    for key in arguments:
        named = next((k for k in spec.args if k.lower() == key.lower()), key)
        if named != key:
            raise Unreadable(f"argument {key!r} differs from {named!r} only in case",
                             INVALID_PARAMS)
    return Item(raw, CALL, request_id, tool=params.name,
                refusal=check_call(spec, params.name, arguments))


def header_mismatch(items: list[Item], batch: bool, headers: Mapping[str, str],
                    spec: McpSpec) -> str | None:
    """The routing headers of protocol 2026-07-28 (Mcp-Method, Mcp-Name, Mcp-Param-*) must say
    what the body says: a server that routes on them must not run something else."""
    names = [name.lower() for name in headers]
    routing = [n for n in names if n in (METHOD_HEADER, NAME_HEADER) or
               n.startswith(PARAM_HEADER)]
    if not routing:
        return None
    if batch:
        return "Mcp-* routing headers cannot describe a batch"
    item = items[0]
    method = headers.get(METHOD_HEADER)
    if method is not None and method != item.method:
        return f"Mcp-Method {method[:100]!r} differs from the body's method"
    name = headers.get(NAME_HEADER)
    if name is not None and item.method == CALL and _decoded(name) != item.tool:
        return "Mcp-Name differs from the body's tool name"
    if spec.args and item.method == CALL and any(n.startswith(PARAM_HEADER) for n in names):
        return "Mcp-Param-* headers are refused where `args` constrains the arguments"
    return None


def _decoded(value: str) -> str | None:
    """An Mcp-Name value as the SDK encodes it (mcp.shared.inbound.encode_header_value: plain,
    or `=?base64?...?=` for what a header cannot hold); None when malformed. Written out
    here because importing the SDK's module loads the whole SDK into every worker (~4 s)."""
    match = _B64.fullmatch(value)
    if match is None:
        return value
    try:
        decoded = base64.b64decode(match[1], validate=True)
        if base64.b64encode(decoded).decode() != match[1]:
            return None
        return decoded.decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None


def error(request_id: RequestId | None, code: int, message: str,
          data: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A JSON-RPC error response, as the SDK's type dumps it."""
    reply = JSONRPCError(jsonrpc="2.0", id=request_id,
                         error=ErrorData(code=code, message=message, data=data))
    dumped: dict[str, Any] = reply.model_dump(mode="json", by_alias=True, exclude_none=True)
    dumped.setdefault("id", None)   # required, even when null
    return dumped


# responses
def filter_message(message: Any, spec: McpSpec) -> tuple[Any, int]:
    """A message from the server with every tools/list answer reduced to the tools a call
    would be allowed for; (message, tools removed). A result that holds `tools` but is not a
    tools/list result the SDK can read raises Unreadable."""
    if not isinstance(message, dict) or not isinstance(message.get("result"), dict) or \
            "tools" not in message["result"]:
        return message, 0
    result = message["result"]
    try:
        ListToolsResult.model_validate(result, by_name=False)
    except ValidationError:
        raise Unreadable("a result with `tools` that is not a tools/list result") from None
    kept = [tool for tool in result["tools"] if tool_visible(spec, tool["name"])]
    removed = len(result["tools"]) - len(kept)
    if not removed:
        return message, 0
    return {**message, "result": {**result, "tools": kept}}, removed


def filter_body(data: bytes, spec: McpSpec, extra: Iterable[dict[str, Any]] = ()) -> bytes:
    """A JSON response body (one message or a batch) filtered, with `extra` messages (the
    gateway's own errors for a batch's refused calls) added. Raises Unreadable."""
    more = list(extra)
    value = loads(data) if data.strip() else []
    batch = isinstance(value, list)
    messages = value if batch else [value]
    filtered = [filter_message(m, spec) for m in messages]
    if not more and not any(removed for _, removed in filtered):
        return data
    out = [m for m, _ in filtered] + more
    return dumps(out if batch or more else out[0])
