"""DNS leaks: nothing the policy does not name is ever resolved upstream, whatever the query
type, transport or server the sandbox picks."""

from __future__ import annotations

import pytest

from gateway.selftest.seat import Seat
from tests.topology import DNS_IP, TRAPS_FIRST

pytestmark = pytest.mark.integration

QTYPES = {"A": 1, "AAAA": 28, "TXT": 16, "MX": 15, "ANY": 255}


@pytest.mark.parametrize("qtype", list(QTYPES))
def test_denied_name_any_query_type(seat: Seat, qtype: str) -> None:
    mark = seat.mark()
    got = seat.run(f"out.update(dns_query('other.upstream.test', {QTYPES[qtype]}))")
    assert (got["rcode"], got["answers"]) == (3, 0)          # NXDOMAIN, nothing else
    assert seat.seen(mark) == []                            # the resolver saw nothing
    rows = [r for r in seat.rows(mark) if r["protocol"] == "dns"]
    assert [(r["method"], r["decision"], r["reason"]) for r in rows] == \
        [(qtype, "deny", "no_matching_rule")]


def test_long_random_label_under_an_allowed_name(seat: Seat) -> None:
    mark = seat.mark()
    got = seat.run("label = ''.join(random.choice(string.ascii_lowercase) for _ in range(60))\n"
                   "out.update(dns_query(label + '.www.upstream.test', 16))")
    assert got["rcode"] == 3
    assert seat.seen(mark) == []
    assert seat.reasons(mark, "dns") == ["no_matching_rule"]


def test_dns_over_tcp(seat: Seat) -> None:
    mark = seat.mark()
    got = seat.run("out.update(dns_query('other.upstream.test', 1, tcp=True))")
    assert got["rcode"] == 3
    assert seat.seen(mark) == []
    assert seat.reasons(mark, "dns") == ["no_matching_rule"]


@pytest.mark.parametrize("server", [DNS_IP, TRAPS_FIRST], ids=["upstream-resolver", "trap"])
def test_query_sent_straight_to_another_server(seat: Seat, server: str) -> None:
    mark = seat.mark()
    got = seat.run(f"out.update(dns_query('other.upstream.test', 1, server={server!r}))")
    assert got["rcode"] == 3              # answered by the gateway, whatever the address
    assert seat.seen(mark) == []
    assert seat.reasons(mark, "dns") == ["no_matching_rule"]


def test_dns_over_https_to_a_host_not_allowed(seat: Seat) -> None:
    mark = seat.mark()
    result = seat.sh("curl -sS --max-time 10 -o /dev/null -w '%{http_code}' "
                     "-H 'accept: application/dns-json' "
                     "'https://other.upstream.test/dns-query?name=leak.example&type=A'; true")
    assert result.stdout in ("000", "")
    assert seat.seen(mark) == []
    assert seat.reasons(mark, "dns") == ["no_matching_rule", "no_matching_rule"]


def test_dns_over_tls_port_853(seat: Seat) -> None:
    mark = seat.mark()
    got = seat.run("""
ctx = ssl.create_default_context()
try:
    s = ctx.wrap_socket(socket.create_connection(('secure.upstream.test', 853), timeout=5),
                        server_hostname='secure.upstream.test')
    s.sendall(b'\\x00\\x1c' + b'\\x00' * 28)
    out['got'] = s.recv(100).hex()
except OSError as e:
    out['got'] = 'error:' + type(e).__name__
""")
    assert str(got["got"]).startswith("error:") or got["got"] == ""
    assert seat.seen(mark, "http") == [] and seat.seen(mark, "tcp") == []
    assert set(seat.reasons(mark, "tls|tcp|http")) == {"no_matching_rule"}


def test_a_resolver_that_keeps_its_port_is_still_answered_after_idling(seat: Seat) -> None:
    """glibc keeps its resolver's socket, so an agent asks from one address and port all its
    life. mitmproxy's DNS mode (which served DNS here before) kept a flow per address and
    port and, once it had idled 20 s, never answered that address and port again."""
    got = seat.run("""
server = open("/etc/resolv.conf").read().split("nameserver")[1].split()[0]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(3)
def ask():
    question = b"".join(bytes([len(p)]) + p.encode() for p in "www.upstream.test".split("."))
    s.sendto(struct.pack(">HHHHHH", random.randrange(65536), 0x0100, 1, 0, 0, 0) + question
             + b"\\0" + struct.pack(">HH", 1, 1), (server, 53))
    try:
        return struct.unpack(">H", s.recv(4096)[6:8])[0]   # answers
    except socket.timeout:
        return "no answer"
out["first"] = ask()
time.sleep(21)
out["after idling"] = ask()
out["again"] = ask()
""")
    assert got == {"first": 1, "after idling": 1, "again": 1}
