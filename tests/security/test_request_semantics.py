"""One meaning per request (docs/POLICY.md, Path semantics): whatever spelling the sandbox
uses, the upstream receives the path the policy matched, and reads it as such whether it
normalises like nginx or like a Java server (the test internet logs both views); what has no
one meaning is refused. Likewise for HTTP/2's :path, opaque streams where rules speak HTTP,
repeated headers, and a private address one rule opened."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from gateway.client import Client
from gateway.selftest.seat import Seat
from tests.harness import Gateway
from tests.security.conftest import SEC_TOKEN
from tests.topology import TRAPS_FIRST, Topology

pytestmark = pytest.mark.integration

POLICY = {
    "version": 1,
    "name": "semantics",
    "rules": [
        {"id": "www", "hosts": ["www.upstream.test"], "ports": [80]},
        {"id": "no-admin", "action": "deny", "hosts": ["www.upstream.test"],
         "paths": ["/admin/**"], "paths_case_insensitive": True},
        {"id": "repos", "hosts": ["secure.upstream.test"], "ports": [443],
         "paths": ["/repos/**"], "inject": [{"secret": "SEC_TOKEN", "as": "bearer"}]},
        {"id": "no-debug", "action": "deny", "hosts": ["secure.upstream.test"],
         "headers": {"x-debug": "1"}},
        {"id": "trap-lan", "hosts": ["trap-0.upstream.test"], "ports": [80],
         "paths": ["/lan/**"], "addresses": [f"{TRAPS_FIRST}/32"]},
        {"id": "trap-any", "hosts": ["trap-0.upstream.test"], "ports": [80]},
    ],
}


@pytest.fixture(scope="module")
def seat(gateway: Gateway, topology: Topology, security_client: Client) -> Iterator[Seat]:
    security_client.put_policy("semantics", json.dumps(POLICY))
    with security_client.create(policy="semantics", secrets=["SEC_TOKEN"],
                                ttl_seconds=3600) as sandbox:
        yield Seat(topology, security_client, sandbox)


def raw_get(seat: Seat, host: str, target: str, port: int = 80, tls: bool = False,
            lead: str = "", extra: str = "") -> str:
    """One HTTP/1.1 request with the request target exactly as given; the reply's text."""
    request = f"{lead}GET {target} HTTP/1.1\r\nHost: {host}\r\n{extra}Connection: close\r\n\r\n"
    got = seat.run(f"""
address = socket.gethostbyname({host!r})
out['reply'] = http_raw(address, {port}, {request.encode()!r},
                        sni={host!r} if {tls!r} else None)
""")
    return str(got["reply"])


def reason_of(reply: str) -> str | None:
    head, _, body = reply.partition("\r\n\r\n")
    if "x-sandgate-reason" not in head.lower():
        return None
    return str(json.loads(body)["reason"])


@pytest.mark.parametrize("target", ["/%61dmin/x", "//admin/x", "/admin;/x", "/ADMIN/x",
                                    "/x/..;/admin/x", "/x/%2e%2E/admin/x", "/admin/",
                                    "/./admin;a=b/x", "/%41dmin//x"])
def test_spellings_of_a_denied_path(seat: Seat, target: str) -> None:
    mark = seat.mark()
    reply = raw_get(seat, "www.upstream.test", target)
    assert reason_of(reply) == "denied_by_rule" and " 403 " in reply.splitlines()[0]
    assert seat.seen(mark, "http") == []


@pytest.mark.parametrize("target", ["/admin%2fx", "/x%2F..%2Fadmin", "/x%5c..%5cadmin",
                                    "/x\\..\\admin", "/%252e%252e/admin", "/admin%00",
                                    "/%c0%ae%c0%ae/admin"])
def test_paths_with_no_one_meaning_are_refused(seat: Seat, target: str) -> None:
    mark = seat.mark()
    reply = raw_get(seat, "www.upstream.test", target)
    assert reason_of(reply) == "ambiguous_path" and " 400 " in reply.splitlines()[0]
    assert seat.seen(mark, "http") == []


@pytest.mark.parametrize(("target", "canonical"), [
    ("/ok/./a//b;v=1/%7Euser?q=%2e", "/ok/a/b/~user?q=%2e"),
    ("/x/%2e%2e/ok", "/ok"),
])
def test_the_upstream_gets_the_path_the_policy_matched(seat: Seat, target: str,
                                                       canonical: str) -> None:
    mark = seat.mark()
    reply = raw_get(seat, "www.upstream.test", target)
    assert " 200 " in reply.splitlines()[0]
    (seen,) = seat.seen(mark, "http")
    assert seen["path"] == canonical
    path = canonical.split("?")[0]
    assert seen["views"] == {"nginx": path, "java": path}   # however the upstream reads it
    (row,) = [r for r in seat.rows(mark) if r["protocol"] == "http"]
    assert (row["path"], row["error"]) == (path, f"path canonicalised from "
                                                 f"{target.split('?')[0]!r}")


def test_a_java_style_detour_out_of_an_allowed_prefix(seat: Seat) -> None:
    """`/repos/..;/admin` matches `/repos/**` as written; a Java server serves /admin."""
    mark = seat.mark()
    out = raw_get(seat, "secure.upstream.test", "/repos/..;/admin", port=443, tls=True)
    assert reason_of(out) == "no_matching_rule"
    assert seat.seen(mark, "http") == []
    allowed = raw_get(seat, "secure.upstream.test", "/repos/x/..;/y", port=443, tls=True)
    assert " 200 " in allowed.splitlines()[0]
    (seen,) = seat.seen(mark, "http")
    assert (seen["path"], seen["views"]["java"]) == ("/repos/y", "/repos/y")
    assert seen["headers"]["authorization"] == f"Bearer {SEC_TOKEN}"


def test_http2_absolute_path_naming_another_host(seat: Seat) -> None:
    """Before: `:path: https://evil.example/x` went to an HTTP/1.1 upstream as an absolute
    request line, with the allowed Host and the injected credential."""
    mark = seat.mark()
    result = seat.sh("curl -sS --http2 --max-time 10 --request-target "
                     "https://evil.example/repos/x https://secure.upstream.test/")
    assert json.loads(result.stdout)["reason"] == "host_mismatch"
    assert seat.seen(mark, "http") == []
    same = seat.sh("curl -sS --http2 --max-time 10 -o /dev/null -w '%{http_code}' "
                   "--request-target https://secure.upstream.test/repos/abs "
                   "https://secure.upstream.test/")
    assert same.stdout == "200"
    (seen,) = seat.seen(mark, "http")
    assert seen["path"] == "/repos/abs"              # origin-form, as HTTP/1.1 wants it
    rows = [r for r in seat.rows(mark) if r["protocol"] in ("http", "h2")]
    assert [r["reason"] for r in rows] == ["host_mismatch", "allowed_by_rule"]


@pytest.mark.parametrize(("port", "tls", "protocol"), [(80, False, "tcp"),
                                                       (443, True, "tls")])
def test_a_leading_crlf_does_not_make_an_opaque_stream(seat: Seat, port: int, tls: bool,
                                                       protocol: str) -> None:
    """mitmproxy takes `\\r\\nGET ...` for a raw stream; nginx ignores the empty line and
    serves the request. Where rules speak HTTP, a stream must be HTTP."""
    host = "www.upstream.test" if port == 80 else "secure.upstream.test"
    mark = seat.mark()
    raw_get(seat, host, "/admin/x" if port == 80 else "/other", port=port, tls=tls,
            lead="\r\n")
    assert seat.seen(mark) == []
    assert seat.reasons(mark, protocol) == ["protocol_mismatch"]


def test_repeated_headers(seat: Seat) -> None:
    mark = seat.mark()
    debug = raw_get(seat, "secure.upstream.test", "/repos/x", port=443, tls=True,
                    extra="X-Debug: 0\r\nX-Debug: 1\r\n")
    assert reason_of(debug) == "denied_by_rule"       # a deny sees every value
    for extra in ("Host: secure.upstream.test\r\n", "Authorization: a\r\nAuthorization: b\r\n",
                  "Content-Length: 0\r\nContent-Length: 0\r\n"):
        reply = raw_get(seat, "secure.upstream.test", "/repos/x", port=443, tls=True,
                        extra=extra)
        assert " 400 " in reply.splitlines()[0], (extra, reply[:300])
    assert seat.seen(mark, "http") == []


def test_a_private_address_serves_only_the_rule_that_opened_it(seat: Seat) -> None:
    mark = seat.mark()
    got = seat.run("""
import http.client
c = http.client.HTTPConnection('trap-0.upstream.test', 80, timeout=10)
statuses = []
for path in ('/lan/x', '/elsewhere'):
    c.request('GET', path)
    r = c.getresponse()
    r.read()
    statuses.append(r.status)
out['statuses'] = statuses
""")
    assert got["statuses"] == [200, 403]
    assert [e["path"] for e in seat.seen(mark, "http")] == ["/lan/x"]
    rows = [r for r in seat.rows(mark) if r["protocol"] == "http"]
    assert [(r["rule"], r["reason"]) for r in rows] == \
        [("trap-lan", "allowed_by_rule"), ("trap-any", "refused_address")]
