"""Redirects are judged hop by hop; WebSocket, HTTP/2, raw TCP, QUIC, ICMP and raw sockets
each get exactly what the policy says, and TLS must carry a matching SNI."""

from __future__ import annotations

import pytest

from gateway.selftest.seat import Seat
from tests.topology import HTTP_IP, HTTPS_IP

pytestmark = pytest.mark.integration


def test_redirect_to_a_denied_host_is_judged_on_its_own(seat: Seat) -> None:
    mark = seat.mark()
    result = seat.sh("curl -sS -L --max-time 10 "
                     "'http://www.upstream.test/redirect?to=http://other.upstream.test/landed'")
    assert result.exit_code == 6                      # could not resolve the second hop
    assert [e["path"] for e in seat.seen(mark, "http")] == [
        "/redirect?to=http://other.upstream.test/landed"]
    reasons = [(r["protocol"], r["host"], r["reason"]) for r in seat.rows(mark)]
    assert ("http", "www.upstream.test", "allowed_by_rule") in reasons
    assert ("dns", "other.upstream.test", "no_matching_rule") in reasons


def test_websocket_to_an_allowed_host(seat: Seat) -> None:
    mark = seat.mark()
    got = seat.run(WEBSOCKET.format(port=8765))
    assert got["status"] == "101" and got["echo"] == "echo:hello"
    assert [e["text"] for e in seat.seen(mark, "ws-message")] == ["hello"]
    rows = [r for r in seat.rows(mark) if r["protocol"] == "ws"]
    assert [(r["decision"], r["status"]) for r in rows] == [("allow", 101)]


def test_websocket_to_a_denied_port(seat: Seat) -> None:
    mark = seat.mark()
    got = seat.run(WEBSOCKET.format(port=8766))
    assert got["status"] == "403"
    assert seat.seen(mark) == []
    assert seat.reasons(mark, "http|ws") == ["no_matching_rule"]


def test_http2_works(seat: Seat) -> None:
    mark = seat.mark()
    result = seat.sh("curl -sS --http2 --max-time 10 -o /dev/null -w '%{http_version} "
                     "%{http_code}' https://secure.upstream.test/h2")
    assert result.stdout == "2 200"
    assert [e["path"] for e in seat.seen(mark, "http")] == ["/h2"]
    assert [(r["protocol"], r["decision"]) for r in seat.rows(mark)
            if r["protocol"] in ("http", "h2")] == [("h2", "allow")]


def test_quic_udp_443_gets_nothing_out(seat: Seat) -> None:
    mark = seat.mark()
    secure = seat.synthetic("secure.upstream.test")
    seat.run(f"""
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for target in (({secure!r}, 443), ({HTTPS_IP!r}, 443)):
    s.sendto(b'\\xc0\\x00\\x00\\x00\\x01' + b'\\x00' * 1200, target)   # a QUIC Initial's shape
""")
    assert seat.seen(mark, "udp") == []
    assert [r for r in seat.rows(mark) if r["protocol"] != "dns"] == []


def test_raw_tcp_needs_a_tcp_rule(seat: Seat) -> None:
    mark = seat.mark()
    got = seat.run("out['allowed'] = echo('echo.upstream.test', 7)\n"
                   "out['denied'] = echo('echo.upstream.test', 7001)")
    assert (got["allowed"], got["denied"] != "ping") == ("ping", True)
    assert [e["local"][1] for e in seat.seen(mark, "tcp")] == [7]
    assert [(r["port"], r["reason"]) for r in seat.rows(mark) if r["protocol"] == "tcp"] == [
        (7, "allowed_by_rule"), (7001, "no_matching_rule")]


def test_bytes_that_are_not_tls_on_443(seat: Seat) -> None:
    mark = seat.mark()
    got = seat.run("""
try:
    s = socket.create_connection(('secure.upstream.test', 443), timeout=5)
    s.sendall(b'\\x01\\x02 opaque tunnel bytes \\x03\\x04' * 4)
    s.settimeout(5)
    out['got'] = s.recv(10).hex() or 'closed'
except OSError as e:
    out['got'] = 'error:' + type(e).__name__
""")
    assert got["got"] in ("closed", "error:ConnectionResetError")
    assert seat.seen(mark) == []
    assert seat.reasons(mark, "tcp") == ["protocol_mismatch"]   # the rules there speak HTTP


def test_tls_without_sni(seat: Seat) -> None:
    secure = seat.synthetic("secure.upstream.test")
    mark = seat.mark()
    got = seat.run(f"""
ctx = ssl.create_default_context()
ctx.check_hostname = False
try:
    s = ctx.wrap_socket(socket.create_connection(({secure!r}, 443), timeout=5))
    out['got'] = 'handshake'
except (OSError, ssl.SSLError) as e:
    out['got'] = 'error:' + type(e).__name__
""")
    assert str(got["got"]).startswith("error:")
    assert seat.seen(mark) == []
    assert seat.reasons(mark, "tls") == ["missing_sni"]


def test_icmp_and_raw_sockets_get_nothing_out(seat: Seat) -> None:
    mark = seat.mark()
    got = seat.run(f"""
results = {{}}
for name, kind in (('raw', socket.SOCK_RAW), ('ping', socket.SOCK_DGRAM)):
    try:
        s = socket.socket(socket.AF_INET, kind, socket.IPPROTO_ICMP)
        s.settimeout(3)
        s.sendto(b'\\x08\\x00\\xf7\\xff\\x00\\x00\\x00\\x00', ({HTTP_IP!r}, 0))
        results[name] = 'reply:' + s.recv(100).hex()
    except OSError as e:
        results[name] = 'error:' + type(e).__name__
out.update(results)
""")
    assert all(str(v).startswith("error:") for v in got.values()), got
    assert seat.seen(mark) == []
    assert seat.rows(mark) == []


WEBSOCKET = """
s = socket.create_connection(('www.upstream.test', {port}), timeout=5)
key = base64.b64encode(os.urandom(16)).decode()
s.sendall(('GET /ws HTTP/1.1\\r\\nHost: www.upstream.test\\r\\nUpgrade: websocket\\r\\n'
           'Connection: Upgrade\\r\\nSec-WebSocket-Key: ' + key + '\\r\\n'
           'Sec-WebSocket-Version: 13\\r\\n\\r\\n').encode())
head = b''
while b'\\r\\n\\r\\n' not in head:
    head += s.recv(1)
out['status'] = head.split(b' ')[1].decode()
if out['status'] == '101':
    payload, mask = b'hello', os.urandom(4)
    s.sendall(bytes([0x81, 0x80 | len(payload)]) + mask +
              bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))
    frame = s.recv(100)
    out['echo'] = frame[2:2 + frame[1]].decode()
"""
