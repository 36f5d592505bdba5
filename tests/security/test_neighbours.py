"""The sandbox's neighbours: the control API, the gateway's other ports, the host's loopback
services, other sandboxes and the metadata address are all out of reach."""

from __future__ import annotations

import socket
import socketserver
import threading
import time
from collections.abc import Iterator

import pytest

from gateway.client import Client
from gateway.selftest.seat import Seat
from tests.harness import Gateway
from tests.topology import TRAPS_FIRST

pytestmark = pytest.mark.integration

CONNECT = """
def attempt(address, port):
    try:
        s = socket.create_connection((address, port), timeout=5)
        s.sendall(b'GET /v1/sandboxes HTTP/1.1\\r\\nHost: ' + address.encode() + b'\\r\\n\\r\\n')
        s.settimeout(5)
        return s.recv(300).decode(errors='replace')
    except OSError as e:
        return 'error:' + type(e).__name__
gateway_ip = open('/etc/resolv.conf').read().split('nameserver')[1].split()[0]
"""


def gateway_ip(seat: Seat) -> str:
    return str(seat.run("out['ip'] = open('/etc/resolv.conf').read().split('nameserver')[1]"
                        ".split()[0]")["ip"])


def test_control_api(seat: Seat, gateway: Gateway) -> None:
    mark = seat.mark()
    got = seat.run(CONNECT + f"""
out['host_side'] = attempt(gateway_ip, {gateway.api_port})
out['loopback'] = attempt('127.0.0.1', {gateway.api_port})
""")
    assert " 403 " in str(got["host_side"]).split("\\r\\n")[0]  # met the proxy, not the API
    assert "not_from_gateway_dns" in str(got["host_side"])
    assert str(got["loopback"]).startswith("error:")          # its own, empty loopback
    assert seat.reasons(mark, "http") == ["not_from_gateway_dns"]


def test_the_gateways_other_ports(seat: Seat, gateway: Gateway) -> None:
    mark = seat.mark()
    got = seat.run(CONNECT + f"out['dns_tcp'] = attempt(gateway_ip, {gateway.dns_port})\n"
                             "out['ssh'] = attempt(gateway_ip, 22)\n")
    for reply in (got["dns_tcp"], got["ssh"]):
        assert "not_from_gateway_dns" in str(reply)
    assert seat.reasons(mark, "http") == ["not_from_gateway_dns"] * 2


@pytest.fixture
def host_service() -> Iterator[tuple[int, list[bytes]]]:
    seen: list[bytes] = []

    class Handler(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            seen.append(self.request.recv(100))

    server = socketserver.TCPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1], seen
    server.shutdown()
    server.server_close()


def test_the_hosts_loopback_services(seat: Seat,
                                     host_service: tuple[int, list[bytes]]) -> None:
    port, seen = host_service
    mark = seat.mark()
    got = seat.run(CONNECT + f"out['loopback'] = attempt('127.0.0.1', {port})\n"
                             f"out['host_side'] = attempt(gateway_ip, {port})\n")
    assert str(got["loopback"]).startswith("error:")
    assert "not_from_gateway_dns" in str(got["host_side"])
    assert seen == []                                          # nothing from the sandbox
    with socket.create_connection(("127.0.0.1", port)) as probe:  # and the service is there
        probe.sendall(b"from the host")
    deadline = time.monotonic() + 5
    while not seen and time.monotonic() < deadline:
        time.sleep(0.01)
    assert seen == [b"from the host"]
    assert seat.reasons(mark, "http") == ["not_from_gateway_dns"]


def test_other_sandboxes(seat: Seat, security_client: Client) -> None:
    with security_client.create(policy="security-suite") as victim:
        listener = victim.exec_stream(["/usr/bin/python3", "-c", """
import socket, sys
tcp = socket.socket(); tcp.bind(('0.0.0.0', 9000)); tcp.listen()
udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); udp.bind(('0.0.0.0', 9001))
tcp.settimeout(8); udp.settimeout(0.1)
print('listening', flush=True)
got = []
try:
    conn, _ = tcp.accept(); got.append('tcp')
except OSError:
    pass
try:
    udp.recv(100); got.append('udp')
except OSError:
    pass
print('got', got, flush=True)
"""], timeout=30)
        kind, first = next(listener)
        assert (kind, first) == ("stdout", b"listening\n")
        mark = seat.mark()
        got = seat.run(CONNECT + f"""
out['tcp'] = attempt({victim.info['ip']!r}, 9000)
socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'x', ({victim.info['ip']!r}, 9001))
""")
        rest = b"".join(data for kind, data in listener if kind == "stdout")
    assert "not_from_gateway_dns" in str(got["tcp"])
    assert rest == b"got []\n"                             # the other sandbox saw nothing
    assert seat.reasons(mark, "http") == ["not_from_gateway_dns"]


def test_metadata_address(seat: Seat) -> None:
    mark = seat.mark()
    got = seat.run(CONNECT + "out['metadata'] = attempt('169.254.169.254', 80)\n"
                             f"out['trap'] = attempt({TRAPS_FIRST!r}, 80)\n")
    assert "not_from_gateway_dns" in str(got["metadata"])
    assert "not_from_gateway_dns" in str(got["trap"])
    assert seat.seen(mark) == []
    assert seat.reasons(mark, "http") == ["not_from_gateway_dns"] * 2
