"""End to end, from inside real gVisor sandboxes through the real gateway to the test
topology: what is allowed arrives, what is not never leaves, and every attempt is audited."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import leftovers
from tests.harness import SANDGATE, Gateway, nft_counter, unforwardable_packets, wait_for
from tests.topology import ECHO_IP, HTTPS_IP, UDP_IP, Topology

pytestmark = pytest.mark.integration


def summary(rows: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """The parts of audit rows a test pins down, in order."""
    return [(r["protocol"], r["method"], r["host"], r["port"], r["decision"], r["reason"],
             r["status"]) for r in rows]


@pytest.fixture(scope="module")
def web_policy(gateway: Gateway) -> Path:
    return gateway.policy("web", [
        {"id": "secure", "hosts": ["secure.upstream.test"], "ports": [443]},
        {"id": "www", "hosts": ["www.upstream.test"], "ports": [80]},
        {"id": "echo", "hosts": ["echo.upstream.test"], "ports": [7], "protocols": ["tcp"]},
    ])


def test_allowed_https_get_succeeds(gateway: Gateway, topology: Topology,
                                    web_policy: Path) -> None:
    mark, last = topology.mark(), gateway.last_audit_id()
    result = gateway.run(web_policy, "curl", "-sS", "--max-time", "10",
                         "https://secure.upstream.test/hello?x=1")
    assert result.returncode == 0, result.stderr
    body = json.loads(result.stdout)
    assert body["path"] == "/hello?x=1"
    assert body["headers"]["host"] == "secure.upstream.test"
    seen = topology.events(mark, "http")
    assert len(seen) == 1 and seen[0]["sni"] == "secure.upstream.test"
    assert seen[0]["local"] == [HTTPS_IP, 443]
    rows = gateway.audit_rows(last)
    assert summary(rows) == [
        ("dns", "A", "secure.upstream.test", 53, "allow", "allowed_by_rule", None),
        ("dns", "AAAA", "secure.upstream.test", 53, "allow", "allowed_by_rule", None),
        (rows[2]["protocol"], "GET", "secure.upstream.test", 443, "allow", "allowed_by_rule",
         200),
    ]
    assert rows[2]["protocol"] in ("http", "h2") and rows[2]["rule"] == "secure"
    assert rows[2]["path"] == "/hello" and rows[2]["bytes_down"] == len(result.stdout)
    assert rows[2]["upstream"] == f"{HTTPS_IP}:443"
    assert len({r["sandbox_id"] for r in rows}) == 1


def test_name_not_in_policy_is_never_resolved(gateway: Gateway, topology: Topology,
                                              web_policy: Path) -> None:
    mark, last = topology.mark(), gateway.last_audit_id()
    result = gateway.run(web_policy, "curl", "-sS", "--max-time", "10",
                         "https://other.upstream.test/")
    assert result.returncode == 6, result.stderr  # curl: could not resolve host
    assert topology.events(mark) == []  # not even the DNS server saw the name
    assert summary(gateway.audit_rows(last)) == [
        ("dns", "A", "other.upstream.test", 53, "deny", "no_matching_rule", None),
        ("dns", "AAAA", "other.upstream.test", 53, "deny", "no_matching_rule", None),
    ]


def test_http_on_a_port_the_policy_does_not_allow_gets_403_json(
        gateway: Gateway, topology: Topology, web_policy: Path) -> None:
    mark, last = topology.mark(), gateway.last_audit_id()
    result = gateway.run(web_policy, "curl", "-sS", "--max-time", "10", "-w", "\n%{http_code}",
                         "http://www.upstream.test:8080/private")
    assert result.returncode == 0, result.stderr
    body, status = result.stdout.rsplit("\n", 1)
    assert status == "403"
    denial = json.loads(body)
    assert denial["error"] == "egress_denied"
    assert (denial["host"], denial["port"], denial["policy"], denial["rule"]) == \
        ("www.upstream.test", 8080, "web", None)
    assert "www.upstream.test:8080" in denial["hint"]
    assert topology.events(mark, "http") == []
    rows = gateway.audit_rows(last)
    assert summary(rows)[-1] == ("http", "GET", "www.upstream.test", 8080, "deny",
                                 "no_matching_rule", 403)
    assert rows[-1]["path"] == "/private"


def test_dialing_a_real_ip_literal_fails(gateway: Gateway, topology: Topology,
                                         web_policy: Path) -> None:
    mark, last = topology.mark(), gateway.last_audit_id()
    for url in (f"https://{HTTPS_IP}/", f"http://{HTTPS_IP}/"):
        result = gateway.run(web_policy, "curl", "-sS", "--max-time", "10", "-w",
                             "\n%{http_code}", url)
        body, status = result.stdout.rsplit("\n", 1)
        assert status == "403", result.stderr
        assert json.loads(body)["reason"] == "not_from_gateway_dns"
    assert topology.events(mark) == []
    assert [(r["protocol"] in ("http", "h2"), r["host"], r["decision"], r["reason"])
            for r in gateway.audit_rows(last)] == [
        (True, HTTPS_IP, "deny", "not_from_gateway_dns"),
        (True, HTTPS_IP, "deny", "not_from_gateway_dns"),
    ]


TCP_PROBE = """
import json, socket
result = {}
for port in (7, 7001):
    try:
        s = socket.create_connection(("echo.upstream.test", port), timeout=5)
        s.sendall(b"ping")
        s.settimeout(5)
        result[port] = s.recv(100).decode() or "closed"
    except OSError as e:
        result[port] = type(e).__name__
print(json.dumps(result))
"""


def test_raw_tcp_only_where_the_policy_allows(gateway: Gateway, topology: Topology,
                                              web_policy: Path) -> None:
    mark, last = topology.mark(), gateway.last_audit_id()
    result = gateway.python(web_policy, TCP_PROBE)
    assert result.returncode == 0, result.stderr
    outcome = json.loads(result.stdout)
    assert outcome["7"] == "ping"            # allowed: echoed back
    assert outcome["7001"] != "ping"         # refused: closed or reset, never echoed
    reached = topology.events(mark, "tcp")
    assert [e["local"] for e in reached] == [[ECHO_IP, 7]]
    # rows from two proxy workers arrive in either order: by port
    tcp_rows = sorted((r for r in gateway.audit_rows(last) if r["protocol"] == "tcp"),
                      key=lambda r: r["port"])
    assert [(r["port"], r["decision"], r["reason"]) for r in tcp_rows] == [
        (7, "allow", "allowed_by_rule"),
        (7001, "deny", "no_matching_rule"),
    ]
    assert tcp_rows[0]["bytes_up"] == 4 and tcp_rows[0]["bytes_down"] == 4


UDP_PROBE = f"""
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for _ in range(5):
    s.sendto(b"leak", ("{UDP_IP}", 9999))
print("sent")
"""


def test_udp_gets_nothing_out(gateway: Gateway, topology: Topology, web_policy: Path) -> None:
    table = f"sandgate_{gateway.prefix}"
    before = dropped(table)
    mark, last = topology.mark(), gateway.last_audit_id()
    result = gateway.python(web_policy, UDP_PROBE)
    assert result.stdout.strip() == "sent", result.stderr
    assert topology.events(mark) == []
    assert gateway.audit_rows(last) == []   # no name was asked for, nothing reached the proxy
    assert dropped(table) >= before + 5   # by the link (forwarding off) or by nftables


def dropped(table: str) -> int:
    return nft_counter(table, "forward", "drop-from-sandbox") + unforwardable_packets()


def test_audit_cli_filters_and_table(gateway: Gateway, web_policy: Path) -> None:
    last = gateway.last_audit_id()
    run = gateway.run(web_policy, "curl", "-sS", "--max-time", "10",
                      "https://other.upstream.test/")
    assert run.returncode == 6, run.stdout + run.stderr   # curl: could not resolve host
    denied = gateway.audit_rows(last, decision="deny", host="other.upstream.test")
    assert denied and all(r["decision"] == "deny" for r in denied), \
        gateway.audit_rows(last)
    sandbox = denied[0]["sandbox_id"]
    assert all(r["sandbox_id"] == sandbox for r in gateway.audit_rows(last, sandbox=sandbox))
    table = gateway.sandgate("audit", f"--sandbox={sandbox}")
    assert table.returncode == 0
    header, *lines = table.stdout.splitlines()
    assert header.split()[:4] == ["TIME", "SANDBOX_ID", "DECISION", "REASON"]
    assert len(lines) == 2 and all("other.upstream.test" in line for line in lines)


@pytest.mark.parametrize(("sig", "when"), [
    (signal.SIGINT, "creating"),   # Ctrl-C while the sandbox is still being built
    (signal.SIGINT, "running"),    # Ctrl-C while the command runs
    (signal.SIGTERM, "running"),
])
def test_interrupted_run_tears_everything_down(gateway: Gateway, web_policy: Path,
                                               sig: signal.Signals, when: str) -> None:
    # As from a terminal: a test run started in the background of a shell ignores SIGINT,
    # and its children would inherit that.
    cli = subprocess.Popen([*SANDGATE, "run", f"--policy={web_policy}", "--", "sleep", "60"],
                           env=gateway.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        sandboxes = wait_for(lambda: [s for s in gateway_sandboxes(gateway)
                                      if when == "creating" or s["state"] == when],
                             timeout=30, interval=0.05)
        assert len(sandboxes) == 1
        netns = sandboxes[0]["netns"]
        cli.send_signal(sig)
        assert cli.wait(timeout=30) in (130, 128 + signal.SIGTERM)
    finally:
        cli.kill()
        cli.communicate()
    assert gateway_sandboxes(gateway) == []
    assert f"netns {netns}" not in leftovers(gateway.prefix)


def test_a_run_exits_with_its_output_and_its_sandbox_goes_after(gateway: Gateway,
                                                                 web_policy: Path) -> None:
    """Against a running gateway the CLI does not wait for the teardown (the gateway answers
    the delete at once): the output is whole all the same, and the sandbox goes."""
    result = gateway.run(web_policy, "sh", "-c", "echo out; echo err >&2; exit 3")
    assert (result.returncode, result.stdout, result.stderr) == (3, "out\n", "err\n")
    wait_for(lambda: gateway_sandboxes(gateway) == [], timeout=30, interval=0.05)


def gateway_sandboxes(gateway: Gateway) -> list[dict[str, Any]]:
    with gateway.client() as c:
        return list(c.get("/v1/sandboxes").json())


