"""The microVM runtime (QEMU microvm, software emulation here) through the same API and the
same gateway, on the same image as gVisor (base: python3, curl): its lifecycle, and the core
egress checks from inside the guest, each with the upstream's and the audit log's view."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from datetime import datetime

import pytest

from gateway.client import Client, Sandbox, SandgateAPIError
from sandbox_net.names import Naming
from tests.harness import Gateway, nft_counter
from tests.topology import ECHO_IP, HTTP_IP, HTTPS_IP, UDP_IP, Topology

pytestmark = pytest.mark.integration

POLICY = """version: 1
name: vm-web
rules:
  - id: www
    hosts: [www.upstream.test]
    ports: [80]
  - id: secure
    hosts: [secure.upstream.test]
    ports: [443]
  - id: echo
    hosts: [echo.upstream.test]
    ports: [7]
    protocols: [tcp]
"""


ECHO = """
import socket
for port in (7, 7001):
    try:
        with socket.create_connection(("echo.upstream.test", port), timeout=5) as s:
            s.sendall(b"ping")
            print(s.recv(100).decode() or "refused")
    except OSError:
        print("refused")
"""
URLLIB = """
import os, sys, urllib.request
with urllib.request.urlopen("https://secure.upstream.test/from-vm-cli", timeout=20) as r:
    print(r.status, os.getcwd(), os.getuid())
print("vm-err", file=sys.stderr)
sys.exit(4)
"""


@pytest.fixture(scope="module")
def admin(gateway: Gateway) -> Iterator[Client]:
    with gateway.admin_client("vm-admin", {"vm-web": POLICY}) as client:
        yield client


@pytest.fixture(scope="module")
def vm(admin: Client) -> Iterator[Sandbox]:
    with admin.create(policy="vm-web", runtime="microvm", ttl_seconds=900) as sandbox:
        yield sandbox


def sh(sandbox: Sandbox, script: str, timeout: float = 30) -> str:
    result = sandbox.exec(["/bin/sh", "-c", script], timeout=timeout)
    return result.stdout


def test_exec_files_and_limits(vm: Sandbox) -> None:
    assert vm.info["runtime"] == "microvm"
    result = vm.exec(["/bin/sh", "-c", 'echo "$GREETING" out; echo err >&2; exit 7'],
                     env={"GREETING": "hello"})
    assert (result.exit_code, result.stdout, result.stderr) == (7, "hello out\n", "err\n")
    assert vm.exec(["cat"], stdin="piped").stdout == "piped"
    assert sh(vm, "uname -r").strip().endswith("cloud-amd64")  # a real, separate kernel
    slow = vm.exec(["sleep", "20"], timeout=2)
    assert slow.timed_out
    vm.upload("/tmp/in/data.bin", bytes(range(256)) * 8)
    assert vm.download("/tmp/in/data.bin") == bytes(range(256)) * 8
    assert {"name": "data.bin", "type": "file", "size": 2048} in vm.files("/tmp/in")
    events = list(vm.exec_stream(["/bin/sh", "-c", "echo a; echo b >&2"]))
    assert (b"".join(d for k, d in events if k == "stdout"), events[-1]) == (b"a\n", ("exit", 0))


def test_allowed_request_goes_through_the_gateway(vm: Sandbox, topology: Topology,
                                                  gateway: Gateway) -> None:
    mark, last = topology.mark(), gateway.last_audit_id()
    out = sh(vm, "curl -sS -o /dev/null -w '%{http_code}' http://www.upstream.test/from-vm")
    assert out == "200"
    (seen,) = topology.events(mark, "http")
    assert (seen["path"], seen["local"]) == ("/from-vm", [HTTP_IP, 80])
    rows = [r for r in gateway.audit_rows(last) if r["protocol"] == "http"]
    assert [(r["sandbox_id"], r["decision"], r["rule"], r["status"]) for r in rows] == \
        [(vm.id, "allow", "www", 200)]


def test_denied_name_never_leaves(vm: Sandbox, topology: Topology) -> None:
    mark = topology.mark()
    out = sh(vm, "getent hosts other.upstream.test || echo refused")
    assert out.strip() == "refused"
    assert topology.events(mark) == []


def test_ip_literals_tcp_and_udp_get_nothing(vm: Sandbox, topology: Topology) -> None:
    mark = topology.mark()
    literal = sh(vm, f"curl -sS -w ' %{{http_code}}' http://{HTTP_IP}/")
    assert literal.endswith(" 403") and "not_from_gateway_dns" in literal
    echo = vm.exec(["python3", "-c", ECHO], timeout=30)
    assert echo.stdout.split() == ["ping", "refused"], echo
    vm.exec(["python3", "-c", f"import socket; socket.socket(socket.AF_INET, "
                              f"socket.SOCK_DGRAM).sendto(b'leak', ('{UDP_IP}', 9999))"])
    reached = topology.events(mark)
    assert [e["local"] for e in reached if e["kind"] == "tcp"] == [[ECHO_IP, 7]]
    assert [e for e in reached if e["kind"] in ("udp", "http")] == []


SPOOF = """
import socket, struct, sys
gateway, spoofed = sys.argv[1], sys.argv[2]

def query(name):
    labels = b"".join(bytes([len(p)]) + p.encode() for p in name.split("."))
    return struct.pack("!HHHHHH", 0x5347, 0x0100, 1, 0, 0, 0) + labels + b"\\0" + \\
        struct.pack("!HH", 1, 1)

# the spoofed query: a raw IPv4 packet with the neighbour's address as its source (the
# kernel fills in the length, the id and the header checksum; UDP's checksum is optional)
payload = query("spoofvm.www.upstream.test")
udp = struct.pack("!HHHH", 5353, 53, 8 + len(payload), 0) + payload
ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 0, 0, 0, 64, 17, 0,
                 socket.inet_aton(spoofed), socket.inet_aton(gateway))
raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
raw.sendto(ip + udp, (gateway, 0))
# the control, from the guest's own address, answered
own = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
own.settimeout(10)
own.sendto(query("control-vm.www.upstream.test"), (gateway, 53))
print(len(own.recv(512)))
"""


def test_a_guest_spoofing_its_neighbours_address(admin: Client, gateway: Gateway) -> None:
    """Root of its own kernel, the guest sends a DNS query with a gVisor neighbour's address
    as its source (a raw socket); the link's pin drops it, and nothing is attributed to the
    neighbour. The guest's own query that follows is the control: once it is in the log, the
    spoofed one would have been too."""
    table = Naming(gateway.prefix).table
    with admin.create(policy="vm-web", ttl_seconds=600) as neighbour, \
            admin.create(policy="vm-web", runtime="microvm", user="root",
                         ttl_seconds=600) as guest:
        since, before = gateway.last_audit_id(), nft_counter(table, "guard", "spoofed-source")
        gw = sh(guest, "sed -n 's/^nameserver //p' /etc/resolv.conf").split()[0]
        result = guest.exec(["python3", "-c", SPOOF, gw, neighbour.info["ip"]], timeout=60)
        assert result.exit_code == 0 and int(result.stdout) > 0, result
        gateway.wait_until(lambda: any("control-vm" in (r["host"] or "")
                                       for r in gateway.audit_rows(since)), timeout=30)
        rows = gateway.audit_rows(since)
        assert [r for r in rows if r["sandbox_id"] == neighbour.id] == []
        assert [r for r in rows if "spoofvm" in (r["host"] or "")] == []
        assert nft_counter(table, "guard", "spoofed-source") > before


def qemu_of(sandbox_id: str) -> list[str]:
    ps = subprocess.run(["ps", "-eww", "-o", "args"], capture_output=True, text=True).stdout
    return [line for line in ps.splitlines() if "qemu-system" in line and sandbox_id in line]


def test_ttl_ends_a_microvm_on_time(admin: Client) -> None:
    sandbox = admin.create(policy="vm-web", runtime="microvm", ttl_seconds=10)
    # The time to live counts from the request, boot included; a boot slowed by a busy host
    # may outlast it, and then the VM must end within a second of its start.
    due = max(datetime.fromisoformat(sandbox.info["expires_at"]).timestamp(), time.time())
    assert qemu_of(sandbox.id)
    deadline = time.monotonic() + 20
    while qemu_of(sandbox.id) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not qemu_of(sandbox.id)
    assert time.time() - due < 1.0
    with pytest.raises(SandgateAPIError):
        while time.monotonic() < deadline:
            sandbox.refresh()
            time.sleep(0.05)


def test_cli_runs_python_in_a_microvm_through_the_gateway(gateway: Gateway,
                                                           topology: Topology) -> None:
    """`sandgate run --image base` in a microVM: the image's Python, HTTPS through the
    gateway (the guest trusts the gateway's CA), the command's status and streams."""
    mark = topology.mark()
    result = gateway.sandgate("run", "--runtime=microvm", "--image=base",
                              f"--policy={gateway.policy_dir}/vm-web.yaml", "--",
                              "python3", "-c", URLLIB)
    assert (result.returncode, result.stdout, result.stderr) == (
        4, "200 /workspace 1000\n", "vm-err\n")
    assert [e["local"] for e in topology.events(mark, "http")] == [[HTTPS_IP, 443]]
