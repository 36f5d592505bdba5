"""Getting a refused MCP tool call past a rule with `mcp:`, from inside a real gVisor sandbox
(raw HTTP with the sandbox's own python3, no SDK), against the test internet's SDK-built MCP
server: the JSON spelt so that another parser reads another tool, the routing headers saying
one thing and the body another, a batch, framing and encodings the gateway does not hold,
other HTTP methods. The server's own log is the judge: the refused tool never runs."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from gateway.client import Client
from gateway.selftest.seat import Seat
from tests.topology import MCP_PORT, Topology

pytestmark = pytest.mark.integration

POLICY = {"version": 1, "name": "mcp-attacks", "rules": [
    {"id": "tools", "hosts": ["mcp.upstream.test"], "ports": [MCP_PORT],
     "mcp": {"tools": ["read_*"], "args": {"repo": "octo/*"}}}]}

SESSION = f"""
import http.client, gzip
def conn():
    return http.client.HTTPSConnection('mcp.upstream.test', {MCP_PORT}, timeout=20,
                                       context=ssl.create_default_context())
def post(body, headers=None, session=None, method='POST'):
    c = conn()
    h = {{'content-type': 'application/json', 'accept': 'application/json, text/event-stream'}}
    if session:
        h.update({{'mcp-session-id': session, 'mcp-protocol-version': '2025-11-25'}})
    h.update(headers or {{}})
    try:
        c.request(method, '/mcp-json', body=body, headers=h,
                  encode_chunked='transfer-encoding' in h)
        r = c.getresponse()
        return r.status, r.read().decode(errors='replace'), r.getheader('mcp-session-id')
    except (OSError, http.client.HTTPException) as e:
        return 0, 'cut:' + type(e).__name__, None
status, text, session = post(json.dumps({{'jsonrpc': '2.0', 'id': 1, 'method': 'initialize',
    'params': {{'protocolVersion': '2025-11-25', 'capabilities': {{}},
                'clientInfo': {{'name': 'attacker', 'version': '1'}}}}}}))
out['init'] = status
post(json.dumps({{'jsonrpc': '2.0', 'method': 'notifications/initialized'}}), session=session)
def call(name, key='name', extra=''):
    return ('{{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{{"' + key + '":"' + name +
            '"' + extra + ',"arguments":{{"repo":"octo/x","number":1}}}}}}')
"""

ATTEMPTS = {
    "duplicate name, last wins": "post(call('read_issue', extra=',\"name\":\"delete_repo\"'), "
                                 "session=session)",
    "name in another case": "post(call('read_issue', extra=',\"Name\":\"delete_repo\"'), "
                            "session=session)",
    "escaped name": "post(call('delete\\\\u005frepo'), session=session)",
    "routing header says read": "post(call('delete_repo'), {'mcp-name': 'read_issue', "
                                "'mcp-method': 'tools/call'}, session=session)",
    "batch": "post('[' + call('read_issue') + ',' + call('delete_repo').replace('7', '8', 1)"
             " + ']', session=session)",
    "chunked": "post(iter([call('delete_repo').encode()]), "
               "{'transfer-encoding': 'chunked'}, session=session)",
    "gzip": "post(gzip.compress(call('delete_repo').encode()), "
            "{'content-encoding': 'gzip'}, session=session)",
    "PUT": "post(call('delete_repo'), session=session, method='PUT')",
    "response envelope": "post('{\"jsonrpc\":\"2.0\",\"id\":7,\"result\":{\"content\":[]},"
                         "\"method\":\"tools/call\",\"params\":{\"name\":\"delete_repo\"}}', "
                         "session=session)",
    "argument in another case": "post('{\"jsonrpc\":\"2.0\",\"id\":7,\"method\":\"tools/call\","
                                "\"params\":{\"name\":\"read_issue\",\"arguments\":"
                                "{\"repo\":\"octo/x\",\"Repo\":\"evil/x\",\"number\":1}}}', "
                                "session=session)",
}


@pytest.fixture(scope="module")
def seat(topology: Topology, security_client: Client) -> Iterator[Seat]:
    security_client.put_policy("mcp-attacks", json.dumps(POLICY))
    with security_client.create(policy="mcp-attacks", ttl_seconds=3600) as sandbox:
        yield Seat(topology, security_client, sandbox)


@pytest.mark.parametrize("name", sorted(ATTEMPTS))
def test_a_refused_tool_never_runs(seat: Seat, name: str) -> None:
    mark = seat.mark()
    got = seat.run(SESSION + f"out['got'] = post_result = {ATTEMPTS[name]}\n")
    assert got["init"] == 200
    status, text, _ = got["got"]
    ran = [e for e in seat.seen(mark, "mcp-call") if e["tool"] != "read_issue"
           or e.get("repo") != "octo/x"]
    assert ran == [], f"{name}: the server ran {ran} (gateway answered {status} {text[:300]})"
    refused = [r for r in seat.rows(mark) if r["decision"] == "deny"]
    assert refused, f"{name}: no refusal in the audit ({status} {text[:300]})"
    assert {r["reason"] for r in refused} <= {"mcp_tool_denied", "mcp_method_denied",
                                              "mcp_unparseable"}


def test_the_batch_still_runs_its_allowed_call(seat: Seat) -> None:
    mark = seat.mark()
    got = seat.run(SESSION + f"out['got'] = {ATTEMPTS['batch']}\n")
    status, text, _ = got["got"]
    messages = {m["id"]: m for m in json.loads(text)}
    assert status == 200 and "result" in messages[7] and "error" in messages[8]
    assert [(e["tool"], e["repo"]) for e in seat.seen(mark, "mcp-call")] == \
        [("read_issue", "octo/x")]
