"""One layer of the egress rules fails: an operator deletes the nftables table by mistake (no
sandbox gains direct egress at any moment, new sandboxes are refused while it is missing, the
watchdog reinstalls it), or forwarding is switched back on for a sandbox's link (nftables
alone still drops)."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.client import Client, SandgateAPIError
from gateway.selftest.seat import Seat
from sandbox_net.names import Naming
from tests.conftest import force_clean, kill_runsc, new_prefix
from tests.harness import Gateway, nft_counter, wait_for
from tests.topology import HTTP_IP, UDP_IP, Topology

pytestmark = pytest.mark.integration

DIRECT = f"""
import json, socket
out = {{}}
try:
    s = socket.create_connection(('{HTTP_IP}', 80), timeout=4)
    s.sendall(b'GET /direct HTTP/1.0\\r\\nHost: www.upstream.test\\r\\n\\r\\n')
    s.settimeout(4)
    out['tcp'] = s.recv(100).decode(errors='replace') or 'closed'
except OSError as e:
    out['tcp'] = 'error:' + type(e).__name__
socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'x', ('{UDP_IP}', 9999))
print(json.dumps(out))
"""


def gateway_with(tmp_path: Path, topology: Topology, interval: str) -> Gateway:
    gw = Gateway(new_prefix(), tmp_path / "gw", topology)
    gw.extra_env["SANDGATE_FIREWALL_CHECK_INTERVAL"] = interval
    return gw


@pytest.fixture
def gateways(tmp_path: Path) -> Iterator[list[Gateway]]:
    made: list[Gateway] = []
    yield made
    for gw in made:
        gw.stop(signal.SIGKILL)
        kill_runsc(gw.home)
        force_clean(gw.prefix)


def delete_table(gw: Gateway) -> None:
    subprocess.run(["nft", "delete", "table", "inet", f"sandgate_{gw.prefix}"], check=True)


def table_present(gw: Gateway) -> bool:
    return subprocess.run(["nft", "list", "table", "inet", f"sandgate_{gw.prefix}"],
                          capture_output=True).returncode == 0


def test_deleted_table_means_no_direct_egress_and_no_new_sandboxes(
        gateways: list[Gateway], tmp_path: Path, topology: Topology) -> None:
    gw = gateway_with(tmp_path, topology, "0")   # no watchdog: watch the gap itself
    gateways.append(gw)
    gw.start()
    with Client(gw.api_url, gw.token("admin", "ops")) as client:
        client.put_policy("web", "version: 1\nname: web\nrules:\n  - id: www\n"
                                 "    hosts: [www.upstream.test]\n    ports: [80]\n")
        sandbox = client.create(policy="web")
        delete_table(gw)
        mark = topology.mark()
        result = sandbox.exec(["/usr/bin/python3", "-c", DIRECT])
        assert '"tcp": "error:' in result.stdout           # no route out, no redirect
        assert topology.events(mark) == []                  # nothing reached the internet
        with pytest.raises(SandgateAPIError) as refused:
            client.create(policy="web")
        assert refused.value.status == 503
        assert "egress rules are not in place" in refused.value.detail


def test_watchdog_reinstalls_the_table(gateways: list[Gateway], tmp_path: Path,
                                       topology: Topology) -> None:
    gw = gateway_with(tmp_path, topology, "0.2")
    gateways.append(gw)
    gw.start()
    delete_table(gw)
    # the table is back before the watchdog's log line is written: wait for both
    wait_for(lambda: table_present(gw) and "reinstalled them" in gw.log_tail(50), timeout=30)


UDP_BURST = f"""
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for _ in range(5):
    s.sendto(b'leak', ('{UDP_IP}', 9999))
out['sent'] = 5
"""


def test_forwarding_switched_back_on_still_drops(fresh_seat: Seat, gateway: Gateway) -> None:
    """`sysctl net.ipv4.ip_forward=1` switches forwarding back on for every interface,
    the sandbox's link included: nftables alone must then hold."""
    link = Naming(gateway.prefix).host_link(fresh_seat.sandbox.id)
    Path(f"/proc/sys/net/ipv4/conf/{link}/forwarding").write_text("1")
    table = f"sandgate_{gateway.prefix}"
    before = nft_counter(table, "forward", "drop-from-sandbox")
    mark = fresh_seat.mark()
    assert fresh_seat.run(UDP_BURST)["sent"] == 5
    assert fresh_seat.seen(mark) == []
    assert nft_counter(table, "forward", "drop-from-sandbox") >= before + 5
