"""The gateway's DNS: crafted queries in, wire-format answers out. Allowed names get a
synthetic address from the sandbox's slice, everything else NXDOMAIN, and every query is a
row; the server answers over real UDP and TCP sockets on loopback."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import struct
from pathlib import Path

import dnslib
import pytest

from gateway.dataplane.dns import DnsAnswer, DnsServer
from gateway.dataplane.dns_throttle import DnsThrottle
from tests.doubles import SANDBOX_IP, SYNTHETIC, Plane, data_plane

POLICY = """
version: 1
name: p
rules:
  - {id: api, hosts: [api.example.test, "*.cdn.example.test"]}
  - {id: no-admin, action: deny, hosts: [admin.cdn.example.test]}
"""


def query(name: str, qtype: str = "A") -> bytes:
    return bytes(dnslib.DNSRecord.question(name, qtype).pack())


def ask(plane: Plane, data: bytes, source: str = SANDBOX_IP) -> dnslib.DNSRecord:
    reply = DnsAnswer(plane.state).answer(source, data)
    assert reply is not None
    return dnslib.DNSRecord.parse(reply)


@pytest.fixture
def plane(tmp_path: Path) -> Plane:
    return data_plane(tmp_path, POLICY, secrets=None)


def test_an_allowed_name_gets_a_synthetic_address_of_its_sandbox(plane: Plane) -> None:
    reply = ask(plane, query("API.example.test."))
    (answer,) = reply.rr
    address = ipaddress.IPv4Address(str(answer.rdata))
    assert address in SYNTHETIC
    assert plane.sandbox.pool.name_for(address) == "api.example.test"
    assert ask(plane, query("api.example.test")).rr[0].rdata == answer.rdata   # stable
    (row, _) = plane.rows
    assert (row["decision"], row["protocol"], row["method"], row["host"], row["rule"]) == \
        ("allow", "dns", "A", "api.example.test", "api")


@pytest.mark.parametrize("name", ["other.example.test", "admin.cdn.example.test",
                                  "x" * 60 + ".api.example.test"])
def test_other_names_get_nxdomain(plane: Plane, name: str) -> None:
    reply = ask(plane, query(name))
    assert (reply.header.rcode, reply.rr) == (dnslib.RCODE.NXDOMAIN, [])
    assert [r["decision"] for r in plane.rows] == ["deny"]


@pytest.mark.parametrize("qtype", ["AAAA", "TXT", "MX", "ANY"])
def test_other_types_of_an_allowed_name_get_an_empty_answer(plane: Plane, qtype: str) -> None:
    reply = ask(plane, query("api.example.test", qtype))
    assert (reply.header.rcode, reply.rr) == (dnslib.RCODE.NOERROR, [])


def test_an_unknown_source_is_refused(plane: Plane) -> None:
    reply = ask(plane, query("api.example.test"), source="10.77.5.6")
    assert reply.header.rcode == dnslib.RCODE.REFUSED
    assert plane.rows[0]["reason"] == "unknown_sandbox"


def test_a_placeholder_in_a_label_trips_the_wire(tmp_path: Path) -> None:
    plane = data_plane(tmp_path, POLICY, secrets={"TOKEN": "real-value"})
    placeholder = plane.sandbox.secrets["TOKEN"]
    reply = ask(plane, query(f"{placeholder}.api.example.test"))
    assert reply.header.rcode == dnslib.RCODE.NXDOMAIN
    (row,) = plane.rows
    assert (row["reason"], row["secrets"]) == ("secret_exfil_attempt", "TOKEN")
    assert plane.sandbox.quarantined
    plane.close()


def test_what_is_not_one_plain_question_is_not_answered(plane: Plane) -> None:
    two = dnslib.DNSRecord.question("api.example.test")
    two.add_question(dnslib.DNSQuestion("other.example.test"))
    assert ask(plane, bytes(two.pack())).header.rcode == dnslib.RCODE.NOTIMP
    assert DnsAnswer(plane.state).answer(SANDBOX_IP, b"\x00garbage") is None
    response = dnslib.DNSRecord.question("api.example.test").reply()
    assert DnsAnswer(plane.state).answer(SANDBOX_IP, bytes(response.pack())) is None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_the_server_answers_over_udp_and_tcp(tmp_path: Path) -> None:
    plane = data_plane(tmp_path, POLICY, ip="127.0.0.1")
    port = free_port()

    async def exchange() -> tuple[bytes, bytes]:
        server = DnsServer(plane.state, port, ttl=30,
                           throttle=DnsThrottle(plane.state.registry, plane.sink))  # type: ignore[arg-type]
        await server.start()
        try:
            loop = asyncio.get_running_loop()
            udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            udp.setblocking(False)
            await loop.sock_connect(udp, ("127.0.0.1", port))
            await loop.sock_sendall(udp, query("api.example.test"))
            over_udp = await asyncio.wait_for(loop.sock_recv(udp, 512), 5)
            udp.close()
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            message = query("api.example.test", "AAAA")
            writer.write(struct.pack(">H", len(message)) + message)
            size = struct.unpack(">H", await reader.readexactly(2))[0]
            over_tcp = await reader.readexactly(size)
            writer.close()
            return over_udp, over_tcp
        finally:
            await server.close()

    over_udp, over_tcp = asyncio.run(exchange())
    udp_reply, tcp_reply = dnslib.DNSRecord.parse(over_udp), dnslib.DNSRecord.parse(over_tcp)
    assert ipaddress.IPv4Address(str(udp_reply.rr[0].rdata)) in SYNTHETIC
    assert udp_reply.rr[0].ttl == 30
    assert (tcp_reply.header.rcode, tcp_reply.rr) == (dnslib.RCODE.NOERROR, [])
