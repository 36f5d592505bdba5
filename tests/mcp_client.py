"""An MCP client the tests run inside a sandbox's network namespace (`nsenter --net`): the
official SDK's `Client` over streamable HTTP, then a raw JSON-RPC batch (the SDK sends none).
Prints one JSON object with what it saw.

    python -m tests.mcp_client URL CA_FILE MODE      (MODE: legacy or auto)
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

PROTOCOL = "2025-11-25"


async def session(url: str, ca: str, mode: str) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    async with httpx2.AsyncClient(verify=ca, timeout=30) as http, \
            Client(streamable_http_client(url, http_client=http), mode=mode) as client:  # type: ignore[arg-type]
        seen["protocol"] = client.protocol_version
        seen["tools"] = sorted(t.name for t in (await client.list_tools()).tools)
        result = await client.call_tool("read_issue", {"repo": "octo/hello", "number": 7})
        seen["allowed"] = [getattr(c, "text", None) for c in result.content]
        for name, args in (("delete_repo", {"repo": "octo/hello"}),
                           ("read_issue", {"repo": "evil/repo", "number": 1})):
            try:
                await client.call_tool(name, args)
                seen[f"refused {name}"] = None
            except MCPError as e:
                seen[f"refused {name}"] = {"code": e.error.code, "message": e.error.message,
                                           "data": e.error.data}
    return seen


def batch(url: str, ca: str) -> dict[str, Any]:
    """A handshake-era session by hand, then one POST holding an allowed call and two refused
    ones."""
    headers = {"accept": "application/json, text/event-stream",
               "content-type": "application/json"}
    with httpx2.Client(verify=ca, timeout=30, headers=headers) as http:
        hello = http.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": PROTOCOL, "capabilities": {},
            "clientInfo": {"name": "batch", "version": "1"}}})
        hello.raise_for_status()
        http.headers["mcp-session-id"] = hello.headers["mcp-session-id"]
        http.headers["mcp-protocol-version"] = PROTOCOL
        http.post(url, json={"jsonrpc": "2.0", "method": "notifications/initialized"})
        calls = [("read_issue", {"repo": "octo/hello", "number": 1}),
                 ("delete_repo", {"repo": "octo/hello"}),
                 ("get_secret", {"key": "x"})]
        body = [{"jsonrpc": "2.0", "id": 10 + i, "method": "tools/call",
                 "params": {"name": name, "arguments": args}}
                for i, (name, args) in enumerate(calls)]
        answer = http.post(url, json=body)
        return {"status": answer.status_code,
                "type": answer.headers.get("content-type", ""),
                "messages": _messages(answer)}


def _messages(answer: httpx2.Response) -> list[dict[str, Any]]:
    if answer.headers.get("content-type", "").startswith("text/event-stream"):
        found = []
        for line in answer.text.splitlines():
            if line.startswith("data:") and line[5:].strip():
                found.append(json.loads(line[5:]))
        return found
    data = answer.json()
    return data if isinstance(data, list) else [data]


def main() -> None:
    url, ca, mode = sys.argv[1:4]
    seen = asyncio.run(session(url, ca, mode))
    seen["batch"] = batch(url, ca)
    print(json.dumps(seen))


if __name__ == "__main__":
    main()
