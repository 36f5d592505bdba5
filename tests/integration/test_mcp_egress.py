"""Rules with `mcp:` against a real MCP server built with the official SDK (the test
internet's mcp.upstream.test, testnet.mcpserver), driven by the SDK's own client.

The client runs in the sandbox's network namespace (`nsenter --net=/run/netns/<netns>`, as
bench/ does with wrk, with the sandbox's resolver), not inside gVisor: the sandbox's python3
is the distribution's 3.11, without the SDK and its compiled dependencies. Its packets take
exactly the sandbox's path: DNS and TCP redirected by the sandbox's nftables rules to the
gateway, the gateway's TLS, the policy, the upstream; only the process runs outside gVisor.
"""

from __future__ import annotations

import ipaddress
import json
import subprocess
import sys
from typing import Any

import pytest

from gateway.client import Client
from tests.harness import REPO, Gateway
from tests.topology import MCP_PORT, Topology

pytestmark = pytest.mark.integration

RULE = {"id": "code-host", "hosts": ["mcp.upstream.test"], "ports": [MCP_PORT],
        "paths": ["/mcp", "/mcp-json"],
        "mcp": {"tools": ["read_*", "delete_*"], "deny_tools": ["delete_*"],
                "args": {"repo": "octo/*"}}}


def client_in(sandbox: dict[str, Any], gateway: Gateway, path: str,
              mode: str) -> dict[str, Any]:
    """The SDK's client in the sandbox's network namespace, with the sandbox's resolver (in a
    mount namespace of its own, as `ip netns exec` does: the host's resolv.conf may name a
    loopback resolver, which the sandbox's namespace does not have)."""
    ca = gateway.home / "ca" / "mitmproxy-ca-cert.pem"
    resolv = gateway.home / f"resolv-{sandbox['id']}.conf"
    resolv.write_text(f"nameserver {ipaddress.IPv4Address(sandbox['ip']) - 1}\n")
    client = ["nsenter", f"--net=/run/netns/{sandbox['netns']}", sys.executable, "-m",
              "tests.mcp_client", f"https://mcp.upstream.test:{MCP_PORT}{path}", str(ca), mode]
    result = subprocess.run(
        ["unshare", "--mount", "sh", "-c", 'mount --bind "$0" /etc/resolv.conf && exec "$@"',
         str(resolv), *client],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    seen: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return seen


@pytest.fixture(scope="module")
def exchanges(gateway: Gateway, topology: Topology) -> dict[str, Any]:
    """Both endpoints, the SSE one in the handshake-era protocol and the JSON one in the
    newest, from one sandbox's network; then what reached the server and the audit."""
    policy = gateway.policy("mcp-egress", [RULE])
    mark = topology.mark()
    with Client(uds=str(gateway.home / "control.sock")) as root, \
            root.create(policy=str(policy)) as sandbox:
        seen = {"sse": client_in(sandbox.info, gateway, "/mcp", "legacy"),
                "json": client_in(sandbox.info, gateway, "/mcp-json", "auto")}
        rows = list(sandbox.audit())
    return {**seen, "calls": topology.events(mark, kind="mcp-call"), "rows": rows}


@pytest.mark.parametrize("endpoint", ["sse", "json"])
def test_tools_list_shows_only_the_allowed_tools(exchanges: dict[str, Any],
                                                  endpoint: str) -> None:
    assert exchanges[endpoint]["tools"] == ["read_issue"]


def test_the_two_endpoints_speak_two_protocol_eras(exchanges: dict[str, Any]) -> None:
    assert exchanges["sse"]["protocol"] == "2025-11-25"
    assert exchanges["json"]["protocol"] == "2026-07-28"


@pytest.mark.parametrize("endpoint", ["sse", "json"])
def test_an_allowed_call_reaches_the_server(exchanges: dict[str, Any], endpoint: str) -> None:
    assert exchanges[endpoint]["allowed"] == ["issue 7 of octo/hello: it works"]
    server = "sse" if endpoint == "sse" else "json"
    assert {"tool": "read_issue", "repo": "octo/hello", "server": server} in \
        [{k: e.get(k) for k in ("tool", "repo", "server")} for e in exchanges["calls"]]


@pytest.mark.parametrize("endpoint", ["sse", "json"])
def test_refused_calls_get_a_json_rpc_error_and_never_reach_the_server(
        exchanges: dict[str, Any], endpoint: str) -> None:
    denied = exchanges[endpoint]["refused delete_repo"]
    assert denied["code"] == -32602
    assert "deny_tools 'delete_*'" in denied["message"]
    assert denied["data"]["reason"] == "mcp_tool_denied"
    assert denied["data"]["rule"] == "code-host"
    argument = exchanges[endpoint]["refused read_issue"]
    assert argument["code"] == -32602 and "argument 'repo'" in argument["message"]
    reached = {(e["tool"], e.get("repo")) for e in exchanges["calls"]}
    assert not {t for t, _ in reached} & {"delete_repo", "get_secret"}
    assert ("read_issue", "evil/repo") not in reached


@pytest.mark.parametrize("endpoint", ["sse", "json"])
def test_a_batch_is_judged_call_by_call(exchanges: dict[str, Any], endpoint: str) -> None:
    batch = exchanges[endpoint]["batch"]
    assert batch["status"] == 200
    by_id = {m["id"]: m for m in batch["messages"]}
    assert set(by_id) == {10, 11, 12}
    assert "issue 1 of octo/hello" in json.dumps(by_id[10]["result"])
    assert by_id[11]["error"]["data"]["reason"] == "mcp_tool_denied"
    assert "delete_repo" in by_id[11]["error"]["message"]
    assert by_id[12]["error"]["code"] == -32602 and "get_secret" in by_id[12]["error"]["message"]
    expected = "text/event-stream" if endpoint == "sse" else "application/json"
    assert batch["type"].startswith(expected)


def test_audit_rows_name_each_method_and_tool(exchanges: dict[str, Any]) -> None:
    rows = exchanges["rows"]
    calls = [(r["mcp_tool"], r["decision"], r["reason"]) for r in rows
             if r["mcp_method"] == "tools/call"]
    assert ("read_issue", "allow", "allowed_by_rule") in calls
    assert ("delete_repo", "deny", "mcp_tool_denied") in calls
    assert ("get_secret", "deny", "mcp_tool_denied") in calls
    # two sessions and two batches: read_issue allowed 4 times, refused (evil repo) twice
    assert calls.count(("read_issue", "allow", "allowed_by_rule")) == 4
    assert calls.count(("read_issue", "deny", "mcp_tool_denied")) == 2
    methods = {r["mcp_method"] for r in rows}
    assert {"tools/list", "initialize", "server/discover"} <= methods
    assert all(r["rule"] == "code-host" for r in rows if r["mcp_method"])
