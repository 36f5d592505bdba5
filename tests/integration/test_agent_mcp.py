"""`sandgate mcp` driven end to end by the official SDK's MCP client, over stdio and over
streamable HTTP: create a sandbox with a policy, run a command the policy allows and one it
denies, write and read a file, read the audit rows, destroy it; a token of another owner
cannot reach the sandbox, and the HTTP transport refuses a request without a valid token."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import anyio
import httpx
import httpx2
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp_types import CallToolResult

from tests.harness import REPO, SANDGATE, Gateway, free_port

pytestmark = pytest.mark.integration

FETCH = ("import sys, urllib.request\n"
         "try:\n"
         "    print(urllib.request.urlopen(sys.argv[1], timeout=20).status)\n"
         "except Exception as e:\n"
         "    print(type(e).__name__, e); sys.exit(3)\n")
RULES = [{"id": "www", "hosts": ["www.upstream.test"], "ports": [80], "methods": ["GET"]}]


def data(result: CallToolResult) -> Any:
    assert not result.is_error, result.content
    structured = result.structured_content
    if isinstance(structured, dict) and set(structured) == {"result"}:
        return structured["result"]
    if structured is not None:
        return structured
    return getattr(result.content[0], "text", None)


def error_text(result: CallToolResult) -> str:
    assert result.is_error
    return " ".join(getattr(c, "text", "") for c in result.content)


@pytest.fixture(scope="module")
def tokens(gateway: Gateway) -> dict[str, str]:
    gateway.policy("mcp-agent", RULES)
    return {"owner": gateway.token("operator"), "other": gateway.token("operator"),
            "auditor": gateway.token("auditor")}


def stdio(gateway: Gateway, token: str) -> Client:
    env = {**gateway.env, "SANDGATE_TOKEN": token}
    return Client(StdioServerParameters(command=sys.executable,
                                        args=["-m", "gateway.cli", "mcp", "--api",
                                              gateway.api_url],
                                        env=env, cwd=str(REPO)))


@pytest.fixture(scope="module")
def http_server(gateway: Gateway) -> Iterator[str]:
    port = free_port()
    process = subprocess.Popen([*SANDGATE, "mcp", "--http", f"127.0.0.1:{port}", "--api",
                                gateway.api_url], env=gateway.env, cwd=REPO,
                               stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}/mcp"
    try:
        for _ in range(600):
            try:
                httpx.get(url, timeout=1)
                break
            except httpx.TransportError:
                assert process.poll() is None, process.stderr.read() if process.stderr else ""
                anyio.run(anyio.sleep, 0.05)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)
        if process.stderr is not None:
            process.stderr.close()


@asynccontextmanager
async def over_http(url: str, token: str) -> AsyncIterator[Client]:
    async with httpx2.AsyncClient(headers={"authorization": f"Bearer {token}"},
                                  timeout=120) as http, \
            Client(streamable_http_client(url, http_client=http)) as client:  # type: ignore[arg-type]
        yield client


async def life_of_a_sandbox(owner: Client, other: Client) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    created = data(await owner.call_tool("create_sandbox", {"policy": "mcp-agent"}))
    sandbox = created["id"]
    seen["created"] = created
    try:
        call = {"sandbox_id": sandbox}
        seen["allowed"] = data(await owner.call_tool("run_command", {
            **call, "command": ["python3", "-c", FETCH, "http://www.upstream.test/"]}))
        seen["denied"] = data(await owner.call_tool("run_command", {
            **call, "command": ["python3", "-c", FETCH, "http://other.upstream.test/"]}))
        await owner.call_tool("write_file", {**call, "path": "notes/a.txt", "content": "hé"})
        seen["read"] = data(await owner.call_tool("read_file", {**call, "path": "notes/a.txt"}))
        seen["escape"] = error_text(await owner.call_tool("read_file", {
            **call, "path": "../etc/passwd"}))
        seen["audit"] = data(await owner.call_tool("sandbox_audit", call))
        seen["other run"] = error_text(await other.call_tool("run_command", {
            **call, "command": ["true"]}))
        seen["other audit"] = error_text(await other.call_tool("sandbox_audit", call))
        seen["other destroy"] = error_text(await other.call_tool("destroy_sandbox", call))
        seen["other list"] = data(await other.call_tool("list_sandboxes", {}))
    finally:
        seen["destroyed"] = data(await owner.call_tool("destroy_sandbox",
                                                       {"sandbox_id": sandbox}))
    seen["after"] = data(await owner.call_tool("list_sandboxes", {}))
    return seen


def check(seen: dict[str, Any]) -> None:
    sandbox = seen["created"]["id"]
    assert seen["created"]["policy"] == "mcp-agent" and seen["created"]["state"] == "running"
    assert seen["allowed"]["exit_code"] == 0 and seen["allowed"]["stdout"].strip() == "200"
    assert seen["denied"]["exit_code"] == 3, seen["denied"]
    assert seen["read"] == "hé"
    assert "outside the work directory" in seen["escape"]
    rows = [(r["host"], r["decision"]) for r in seen["audit"]]
    assert ("www.upstream.test", "allow") in rows
    assert ("other.upstream.test", "deny") in rows
    for key in ("other run", "other audit", "other destroy"):
        assert "403" in seen[key], seen[key]
    assert sandbox not in json.dumps(seen["other list"])
    assert sandbox in seen["destroyed"]
    assert sandbox not in json.dumps(seen["after"])


def life_over(connect: Callable[[str], AbstractAsyncContextManager[Client]],
              tokens: dict[str, str]) -> dict[str, Any]:
    """life_of_a_sandbox with the owner and the other token each connected by `connect`."""
    async def scenario() -> dict[str, Any]:
        async with connect(tokens["owner"]) as owner, connect(tokens["other"]) as other:
            return await life_of_a_sandbox(owner, other)
    return anyio.run(scenario)


def test_over_stdio(gateway: Gateway, tokens: dict[str, str]) -> None:
    check(life_over(lambda token: stdio(gateway, token), tokens))


def test_over_http(http_server: str, tokens: dict[str, str]) -> None:
    check(life_over(lambda token: over_http(http_server, token), tokens))


def test_http_needs_a_token_that_may_use_sandboxes(http_server: str,
                                                   tokens: dict[str, str]) -> None:
    hello = {"jsonrpc": "2.0", "id": 1, "method": "server/discover", "params": {}}
    headers = {"accept": "application/json, text/event-stream"}
    assert httpx.post(http_server, json=hello, headers=headers).status_code == 401
    forged = {**headers, "authorization": "Bearer sgt_not-a-token"}
    assert httpx.post(http_server, json=hello, headers=forged).status_code == 401
    auditor = {**headers, "authorization": f"Bearer {tokens['auditor']}"}
    answer = httpx.post(http_server, json=hello, headers=auditor)
    assert answer.status_code == 403 and "sandboxes" in answer.json()["detail"]


def test_stdio_without_a_token_or_the_socket_is_one_line(gateway: Gateway) -> None:
    env = {k: v for k, v in gateway.env.items() if k != "SANDGATE_TOKEN"}
    result = subprocess.run([*SANDGATE, "mcp", "--api", gateway.api_url], env=env, cwd=REPO,
                            capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "SANDGATE_TOKEN" in result.stderr
    assert "Traceback" not in result.stderr
