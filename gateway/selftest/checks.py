"""The checks: each one real attempt from inside the sandbox, judged three ways where they
apply: what the sandbox got, what the throw-away internet saw, what the audit log says."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from gateway.selftest.plan import Plan, Probe
from gateway.selftest.seat import Mark, Seat
from sandbox_net.testnet import DNS_IP, ECHO_IP, HTTPS_IP, TRAPS, UDP_IP


@dataclass(frozen=True)
class Result:
    check: str
    passed: bool
    detail: str


Check = Callable[[Seat, Plan], Iterator[Result]]


def judge(check: str, what: str, problems: list[str]) -> Result:
    return Result(check, not problems, what + ("" if not problems else ": " + "; ".join(problems)))


def request_bytes(probe: Probe, host_header: str | None = None) -> bytes:
    default = 443 if probe.tls else 80
    host = host_header or (probe.host if probe.port == default else f"{probe.host}:{probe.port}")
    headers = "".join(f"{k}: {v}\r\n" for k, v in probe.headers.items())
    return (f"{probe.method} {probe.path} HTTP/1.1\r\nHost: {host}\r\n{headers}"
            "Content-Length: 0\r\nConnection: close\r\n\r\n").encode()


def attempt(seat: Seat, probe: Probe, host_header: str | None = None) -> str:
    sni = probe.host if probe.tls else None
    got = seat.run(f"out['reply'] = http_raw(socket.gethostbyname({probe.host!r}), "
                   f"{probe.port}, {request_bytes(probe, host_header)!r}, sni={sni!r})")
    return str(got["reply"])


def status(reply: str) -> str:
    return reply.split(" ", 2)[1] if reply.startswith("HTTP/") else reply


def reached(seat: Seat, mark: Mark, name: str | None = None) -> list[dict[str, Any]]:
    """What the internet saw since `mark`, but the gateway's own lookups of allowed names."""
    return [e for e in seat.seen(mark) if e["kind"] != "dns" or e["name"] == name]


def refusals(seat: Seat, mark: Mark) -> list[dict[str, Any]]:
    return [r for r in seat.rows(mark) if r["decision"] == "deny"]


def _refused(seat: Seat, mark: Mark, reply: str, name: str | None = None) -> list[str]:
    problems = []
    if status(reply) == "200":
        problems.append("the sandbox got a 200")
    if seen := reached(seat, mark, name):
        problems.append(f"the internet saw {_kinds(seen)}")
    if not refusals(seat, mark):
        problems.append("no refusal in the audit log")
    return problems


def _kinds(events: list[dict[str, Any]]) -> str:
    return ", ".join(sorted({f"{e['kind']} to {e.get('local') or e.get('name')}"
                             for e in events}))


# what the policy allows works, with its credentials
def allowed(seat: Seat, plan: Plan) -> Iterator[Result]:
    for probe in plan.probes:
        mark = seat.mark()
        reply = attempt(seat, probe)
        problems = []
        if status(reply) != "200":
            problems.append(f"the sandbox got {status(reply)[:80]!r}")
        hits = [e for e in seat.seen(mark, "http") if e["path"] == probe.path]
        if len(hits) != 1:
            problems.append(f"the server saw {len(hits)} such requests")
        rules = [r["rule"] for r in seat.rows(mark) if r["reason"] == "allowed_by_rule"]
        if probe.rule not in rules:
            problems.append(f"no allowed_by_rule row for rule {probe.rule} (audit: {rules})")
        yield judge("allowed", f"rule {probe.rule}: {probe.method} {probe.url}", problems)
        if probe.secrets and hits:
            yield _injected(probe, hits[0], reply, seat)


def _injected(probe: Probe, seen: dict[str, Any], reply: str, seat: Seat) -> Result:
    values = {name: dummy_secret(name) for name in probe.secrets}
    sent = json.dumps(seen)
    problems = [f"{name} did not reach the server" for name, value in values.items()
                if value not in sent]
    problems += [f"the sandbox saw the value of {name}" for name, value in values.items()
                 if value in reply]
    return judge("credentials", f"rule {probe.rule}: {', '.join(probe.secrets)} injected "
                 "on the way out, only placeholders in the sandbox", problems)


def dummy_secret(name: str) -> str:
    return f"selftest-value-of-{name}"


# names and DNS
def unlisted_name(seat: Seat, plan: Plan) -> Iterator[Result]:
    name = plan.denied_name
    if name is None:
        yield Result("unlisted name", False, "the policy allows every name the self-test tried")
        return
    mark = seat.mark()
    got = seat.run(f"out['dns'] = dns_query({name!r}, 1)\n"
                   f"try:\n    out['ip'] = socket.gethostbyname({name!r})\n"
                   "except OSError as e:\n    out['ip'] = 'error:' + type(e).__name__")
    problems = _refused(seat, mark, str(got["ip"]), name)
    if got["dns"]["answers"]:
        problems.append("the sandbox got an address for it")
    yield judge("unlisted name", f"{name} does not resolve and is never looked up", problems)


def dns_elsewhere(seat: Seat, plan: Plan) -> Iterator[Result]:
    name = plan.denied_name or "sandgate-selftest.invalid"
    mark = seat.mark()
    got = seat.run(f"out['udp'] = dns_query({name!r}, 1, server={DNS_IP!r})\n"
                   f"out['tcp'] = dns_query({name!r}, 16, server={DNS_IP!r}, tcp=True)")
    problems = [f"the internet saw {_kinds(seen)}"] if (seen := reached(seat, mark, name)) else []
    if got["udp"]["answers"] or got["tcp"]["answers"]:
        problems.append("the sandbox got an answer for it")
    yield judge("dns elsewhere", f"queries for {name} sent straight to another DNS server "
                "(UDP and TCP) are answered by the gateway only", problems)


# addresses
def _get_refused(seat: Seat, address: str, port: int, host: str, path: str = "/",
                 sni: str | None = None) -> list[str]:
    """What is wrong with a GET sent by hand to `address` (over TLS with `sni` when given):
    nothing when it was refused."""
    mark = seat.mark()
    request = f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()
    got = seat.run(f"out['reply'] = http_raw({address!r}, {port}, {request!r}, sni={sni!r})")
    return _refused(seat, mark, str(got["reply"]))


def ip_literal(seat: Seat, plan: Plan) -> Iterator[Result]:
    sni = plan.probes[0].host if plan.probes else "sandgate-selftest.example"
    yield judge("ip literal", f"https://{HTTPS_IP}/ dialed directly (SNI {sni}) is refused",
                _get_refused(seat, HTTPS_IP, 443, sni, sni=sni))


def private_addresses(seat: Seat, plan: Plan) -> Iterator[Result]:
    for address in TRAPS:
        yield judge("private address", f"http://{address}/ is refused",
                    _get_refused(seat, address, 80, address, "/latest/meta-data/"))


def host_fronting(seat: Seat, plan: Plan) -> Iterator[Result]:
    if not plan.probes or plan.denied_name is None:
        return
    probe = plan.probes[0]
    mark = seat.mark()
    reply = attempt(seat, probe, host_header=plan.denied_name)
    yield judge("host fronting", f"a connection to {probe.host} carrying Host: "
                f"{plan.denied_name} is refused", _refused(seat, mark, reply, plan.denied_name))


def ssrf_by_name(seat: Seat, plan: Plan) -> Iterator[Result]:
    """Run after the probed names were re-pointed at the metadata address."""
    for probe in plan.probes:
        mark = seat.mark()
        reply = attempt(seat, probe)
        problems = _refused(seat, mark, reply)
        reasons = [r["reason"] for r in refusals(seat, mark)]
        if reasons and "refused_address" not in reasons:
            problems.append(f"refused for {reasons}, not refused_address")
        yield judge("ssrf by name", f"{probe.host} resolving to 169.254.169.254 is refused "
                    "at connect time", problems)


# other protocols
def raw_tcp(seat: Seat, plan: Plan) -> Iterator[Result]:
    mark = seat.mark()
    got = seat.run(f"out['reply'] = echo({ECHO_IP!r}, 7)")
    problems = _refused(seat, mark, "")
    if got["reply"] == "ping":
        problems.append("the bytes came back")
    yield judge("raw tcp", f"a TCP stream to {ECHO_IP}:7 gets nothing out", problems)


def udp(seat: Seat, plan: Plan) -> Iterator[Result]:
    mark = seat.mark()
    seat.run(f"""
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for target in [({UDP_IP!r}, 9999), ({HTTPS_IP!r}, 443)]:
    for _ in range(3):
        s.sendto(b'leak', target)
""")
    seen = reached(seat, mark)
    yield judge("udp", f"datagrams to {UDP_IP}:9999 and QUIC to {HTTPS_IP}:443 get nothing "
                "out", [f"the internet saw {_kinds(seen)}"] if seen else [])


def ipv6(seat: Seat, plan: Plan) -> Iterator[Result]:
    mark = seat.mark()
    got = seat.run(f"""
replies = []
for address in ['2001:db8::1', '64:ff9b::{HTTPS_IP}', '::ffff:{HTTPS_IP}']:
    try:
        s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        s.settimeout(5)
        s.connect((address, 443))
        s.sendall(b'GET / HTTP/1.0\\r\\n\\r\\n')
        replies.append(s.recv(100).decode(errors='replace') or 'closed')
    except OSError as e:
        replies.append('error:' + type(e).__name__)
out['replies'] = replies
""")
    problems = [f"the internet saw {_kinds(seen)}"] if (seen := reached(seat, mark)) else []
    problems += [f"the sandbox got {r[:40]!r}" for r in got["replies"] if status(r) == "200"]
    yield judge("ipv6", "IPv6, NAT64 and IPv4-mapped addresses get nothing out", problems)


FIRST_ROUND: list[Check] = [allowed, unlisted_name, dns_elsewhere, ip_literal,
                            private_addresses, host_fronting, raw_tcp, udp, ipv6]
SECOND_ROUND: list[Check] = [ssrf_by_name]
