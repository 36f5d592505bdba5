"""Confusion: the host a request names must be the host the sandbox dialed, in the SNI, the
Host header, HTTP/2's :authority and an absolute request line alike; CONNECT and ambiguous
framing are refused; a kept-alive connection cannot change host halfway."""

from __future__ import annotations

import json

import pytest

from gateway.selftest.seat import Mark, Seat

pytestmark = pytest.mark.integration


def test_sni_of_an_allowed_name_on_another_names_address(seat: Seat) -> None:
    www = seat.synthetic("www.upstream.test")
    mark = seat.mark()
    got = seat.run(f"""
ctx = ssl.create_default_context()
try:
    s = ctx.wrap_socket(socket.create_connection(({www!r}, 443), timeout=5),
                        server_hostname='secure.upstream.test')
    s.sendall(b'GET / HTTP/1.1\\r\\nHost: secure.upstream.test\\r\\n\\r\\n')
    out['got'] = s.recv(200).decode(errors='replace')
except (OSError, ssl.SSLError) as e:
    out['got'] = 'error:' + type(e).__name__
""")
    assert str(got["got"]).startswith("error:")
    assert seat.seen(mark, "http") == []
    assert seat.reasons(mark, "tls") == ["sni_mismatch"]


def fronted(seat: Seat, version: str, path: str) -> Mark:
    """curl to secure.upstream.test naming www.upstream.test (Host header, or :authority):
    refused with host_mismatch and nothing reached the internet. The mark taken before."""
    mark = seat.mark()
    result = seat.sh(f"curl -sS {version} --max-time 10 -H 'Host: www.upstream.test' "
                     f"https://secure.upstream.test{path}")
    assert json.loads(result.stdout)["reason"] == "host_mismatch"
    assert seat.seen(mark, "http") == []
    return mark


def test_host_header_differs_from_sni(seat: Seat) -> None:
    mark = fronted(seat, "--http1.1", "/fronted")
    assert seat.reasons(mark, "http|h2") == ["host_mismatch"]


def test_http2_authority_differs_from_sni(seat: Seat) -> None:
    mark = fronted(seat, "--http2", "/fronted-h2")
    rows = [r for r in seat.rows(mark) if r["protocol"] in ("http", "h2")]
    assert [(r["protocol"], r["reason"]) for r in rows] == [("h2", "host_mismatch")]


def test_absolute_request_uri_naming_another_host(seat: Seat) -> None:
    www = seat.synthetic("www.upstream.test")
    mark = seat.mark()
    got = seat.run(f"""
out['reply'] = http_raw({www!r}, 80, b'GET http://other.upstream.test/x HTTP/1.1\\r\\n'
                        b'Host: www.upstream.test\\r\\nConnection: close\\r\\n\\r\\n')
""")
    assert status_of_reply(got) == "403" and "host_mismatch" in str(got["reply"])
    assert seat.seen(mark, "http") == []
    assert seat.reasons(mark, "http") == ["host_mismatch"]


@pytest.mark.parametrize("target", ["other.upstream.test:443", "www.upstream.test:8080"],
                         ids=["denied-host", "denied-port"])
def test_connect_is_refused(seat: Seat, target: str) -> None:
    www = seat.synthetic("www.upstream.test")
    mark = seat.mark()
    got = seat.run(f"""
out['reply'] = http_raw({www!r}, 80, b'CONNECT {target} HTTP/1.1\\r\\nHost: {target}\\r\\n\\r\\n',
                        wait=3)
""")
    assert not str(got["reply"]).startswith("HTTP/1.1 200")
    assert seat.seen(mark) == []
    assert seat.reasons(mark, "http") == ["protocol_error"]


def test_cl_te_smuggling(seat: Seat) -> None:
    www = seat.synthetic("www.upstream.test")
    mark = seat.mark()
    hidden = "GET /hidden HTTP/1.1\\r\\nHost: other.upstream.test\\r\\n\\r\\n"
    got = seat.run(f"""
body = b'0\\r\\n\\r\\n{hidden}'
request = (b'POST /front HTTP/1.1\\r\\nHost: www.upstream.test\\r\\n'
           b'Content-Length: ' + str(len(body)).encode() + b'\\r\\n'
           b'Transfer-Encoding: chunked\\r\\n\\r\\n' + body)
out['reply'] = http_raw({www!r}, 80, request, wait=3)
""")
    assert not str(got["reply"]).startswith("HTTP/1.1 200")
    assert [e["path"] for e in seat.seen(mark, "http")] == []   # neither request went out
    assert seat.reasons(mark, "http") == ["protocol_error"]


def test_second_request_on_a_kept_alive_connection_to_another_host(seat: Seat) -> None:
    www = seat.synthetic("www.upstream.test")
    mark = seat.mark()
    got = seat.run(f"""
s = socket.create_connection(({www!r}, 80), timeout=5)
replies = []
for host in (b'www.upstream.test', b'other.upstream.test'):
    s.sendall(b'GET /keepalive HTTP/1.1\\r\\nHost: ' + host + b'\\r\\n\\r\\n')
    head = b''
    while b'\\r\\n\\r\\n' not in head:
        head += s.recv(1)
    length = int([l for l in head.split(b'\\r\\n') if l.lower().startswith(b'content-length')][0]
                 .split(b':')[1])
    body = b''
    while len(body) < length:
        body += s.recv(length - len(body))
    replies.append(head.split(b' ')[1].decode())
out['codes'] = replies
""")
    assert got["codes"] == ["200", "403"]
    assert [e["headers"]["host"] for e in seat.seen(mark, "http")] == ["www.upstream.test"]
    assert seat.reasons(mark, "http") == ["allowed_by_rule", "host_mismatch"]


def status_of_reply(got: dict[str, object]) -> str:
    reply = str(got["reply"])
    return reply.split(" ", 2)[1] if reply.startswith("HTTP/") else reply
