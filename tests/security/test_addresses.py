"""Addresses: the sandbox dials names, never real addresses; and a name that resolves into
private, loopback, link-local, metadata, CGNAT or sandgate's own ranges is refused at connect
time (each such address hosts a trap in the test internet, which must see nothing)."""

from __future__ import annotations

import json

import pytest

from gateway.client import Client
from gateway.selftest.seat import Seat
from tests.harness import Gateway
from tests.topology import HTTP_IP, TRAPS, TRAPS_FIRST, Topology

pytestmark = pytest.mark.integration

LITERALS = {  # 198.51.100.10, spelt the ways URL parsers and inet_aton accept
    "dotted": HTTP_IP,
    "decimal": str(198 << 24 | 51 << 16 | 100 << 8 | 10),
    "octal": "0306.063.0144.012",
    "hex": "0xc6.0x33.0x64.0xa",
    "short": "198.51.25610",
}


@pytest.mark.parametrize("form", list(LITERALS))
def test_ipv4_literal_spellings(seat: Seat, form: str) -> None:
    mark = seat.mark()
    result = seat.sh(f"curl -sS --max-time 10 http://{LITERALS[form]}/literal")
    body = json.loads(result.stdout)
    assert (body["error"], body["reason"]) == ("egress_denied", "not_from_gateway_dns")
    assert seat.seen(mark, "http") == []
    assert seat.reasons(mark, "http") == ["not_from_gateway_dns"]


def test_ipv4_mapped_ipv6_is_just_an_ipv4_literal(seat: Seat) -> None:
    # A dual-stack socket sends IPv4 for ::ffff:a.b.c.d, so it meets the gateway like any
    # IPv4 literal.
    mark = seat.mark()
    got = seat.run("""
s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
s.settimeout(5)
try:
    s.connect(('::ffff:198.51.100.10', 80))
    s.sendall(b'GET /mapped HTTP/1.0\\r\\nHost: 198.51.100.10\\r\\n\\r\\n')
    out['got'] = s.recv(300).decode(errors='replace')
except OSError as e:
    out['got'] = 'error:' + type(e).__name__
""")
    assert str(got["got"]).startswith(("error:", "HTTP/1.1 403"))
    assert seat.seen(mark) == []
    assert seat.reasons(mark, "http") in ([], ["not_from_gateway_dns"])


@pytest.mark.parametrize("address", ["64:ff9b::c633:640a", "2001:db8::10", "::1"],
                         ids=["nat64", "global", "loopback"])
def test_ipv6_goes_nowhere(seat: Seat, address: str) -> None:
    # IPv6 is disabled in the sandbox's namespace: not even a packet is sent.
    mark = seat.mark()
    got = seat.run(f"""
try:
    s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    s.settimeout(5)
    s.connect(({address!r}, 80))
    s.sendall(b'GET / HTTP/1.0\\r\\n\\r\\n')
    out['got'] = s.recv(100).decode(errors='replace')
except OSError as e:
    out['got'] = 'error:' + type(e).__name__
""")
    assert str(got["got"]).startswith("error:")
    assert seat.seen(mark) == []
    assert seat.rows(mark) == []


REFUSED_NAMES = {
    "private-10": ("trap-0.upstream.test", TRAPS[0]),
    "metadata": ("trap-1.upstream.test", TRAPS[1]),
    "cgnat": ("trap-2.upstream.test", TRAPS[2]),
    "private-172": ("trap-3.upstream.test", TRAPS[3]),
    "private-192": ("trap-4.upstream.test", TRAPS[4]),
    "loopback": ("loop.upstream.test", "127.0.0.1"),
    "sandbox-links": ("sandboxes.upstream.test", "10.77.0.1"),
    "gateway-own": ("gateway-own.upstream.test", "198.51.100.249"),
}


@pytest.mark.parametrize("case", list(REFUSED_NAMES))
def test_allowed_name_resolving_to_a_refused_address(seat: Seat, case: str) -> None:
    name, address = REFUSED_NAMES[case]
    mark = seat.mark()
    result = seat.sh(f"curl -sS --max-time 10 http://{name}/ssrf")
    body = json.loads(result.stdout)
    assert body["reason"] == "refused_address"
    assert [e for e in seat.seen(mark) if e.get("local", [None])[0] == address] == []
    assert seat.seen(mark, "http") == []
    row = next(r for r in seat.rows(mark) if r["protocol"] == "http")
    assert (row["host"], row["decision"], row["reason"]) == (name, "deny", "refused_address")
    assert address in (row["error"] or "")


def test_a_rule_that_names_the_address_opens_it(gateway: Gateway, topology: Topology,
                                                security_client: Client) -> None:
    # the positive control: the trap is reachable when, and only when, a rule lists it
    security_client.put_policy("private-service", json.dumps({
        "version": 1, "name": "private-service", "rules": [
            {"id": "internal", "hosts": ["trap-0.upstream.test"], "ports": [80],
             "addresses": [f"{TRAPS_FIRST}/32"]}]}))
    mark = topology.mark()
    with security_client.create(policy="private-service") as sandbox:
        result = sandbox.exec(["curl", "-sS", "--max-time", "10", "-o", "/dev/null", "-w",
                               "%{http_code}", "http://trap-0.upstream.test/listed"])
    assert result.stdout == "200"
    assert [e["local"][0] for e in topology.events(mark, "http")] == [TRAPS_FIRST]


def test_dns_rebinding(seat: Seat) -> None:
    # rebind.upstream.test answers the public address and the trap in turn: each connection
    # is resolved once and dials exactly what was vetted, so the trap never sees a request.
    mark = seat.mark()
    got = seat.run("""
codes = []
for i in range(4):
    reply = http_raw(socket.gethostbyname('rebind.upstream.test'), 80,
                     b'GET /rebind HTTP/1.1\\r\\nHost: rebind.upstream.test\\r\\n'
                     b'Connection: close\\r\\n\\r\\n')
    codes.append(status_of(reply))
out['codes'] = codes
""")
    codes = got["codes"]
    assert set(codes) <= {"200", "403"} and "403" in codes  # the rebinding was tried
    assert {e["local"][0] for e in seat.seen(mark, "http")} == {HTTP_IP}  # trap saw nothing
    reasons = seat.reasons(mark, "http")
    assert sorted(reasons) == sorted("allowed_by_rule" if c == "200" else "refused_address"
                                     for c in codes)
