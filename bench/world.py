"""A throw-away world for benchmarks, apart from the real host (like `sandgate selftest`'s): a
"host" namespace for gateways, the test internet beside it with fast trivial upstreams, and a
client namespace whose TCP goes to a bare mitmproxy (the baseline).

Nothing here touches the real host's routes or ports, so benchmarks can run beside a test
session or a real gateway."""

from __future__ import annotations

import base64
import contextlib
import secrets
import string
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from pyroute2 import IPRoute, netns

from gateway.client import Client
from gateway.processes.launch import gateway
from gateway.selftest.world import host_namespace
from gateway.settings import Settings
from sandbox_net.testnet import DNS_IP, HTTP_IP, HTTPS_IP, Topology

BENCH = Path(__file__).resolve().parent
PLAIN_PORT = 8081     # fast upstream, HTTP, on HTTP_IP (www.upstream.test)
TLS_PORT = 8444       # fast upstream, HTTPS, on HTTPS_IP (secure.upstream.test)
BARE_PORT = 16001     # the bare mitmproxy's transparent port, in the host namespace
BARE_LINK = ("10.98.0.1", "10.98.0.2")   # host and client ends of the bare client's link


@dataclass
class World:
    prefix: str
    topology: Topology
    workdir: Path
    # one master key for the world's gateways: they share a database (docs/DEPLOY.md)
    master_key: str = field(
        default_factory=lambda: base64.b64encode(secrets.token_bytes(32)).decode())

    @property
    def host(self) -> str:
        return f"{self.prefix}-host"

    @property
    def bare_client(self) -> str:
        return f"{self.prefix}-bare"

    def run_in(self, namespace: str, cmd: list[str], **kwargs: object) -> subprocess.Popen[str]:
        return subprocess.Popen(["nsenter", f"--net=/run/netns/{namespace}", *cmd],
                                text=True, **kwargs)  # type: ignore[call-overload]


def _started(process: subprocess.Popen[str], what: str) -> subprocess.Popen[str]:
    assert process.stdout is not None
    if process.stdout.readline().strip() != "listening":
        raise SystemExit(f"{what} did not start")
    return process


@contextlib.contextmanager
def world(workdir: Path, mcp: bool = False) -> Iterator[World]:
    """`mcp`: the test internet's MCP server too (sandbox_net.testnet.mcpserver)."""
    # three characters: each gateway adds a fourth (gateway_in)
    prefix = "b" + "".join(secrets.choice(string.ascii_lowercase + string.digits)
                           for _ in range(2))
    host = f"{prefix}-host"
    processes: list[subprocess.Popen[str]] = []
    with host_namespace(host):
        topology = Topology(prefix, workdir / "inet", host_netns=host, mcp=mcp)
        topology.start()
        the_world = World(prefix, topology, workdir)
        try:
            assert topology.ca is not None
            cert, key = str(topology.ca.server_cert), str(topology.ca.server_key)
            for _ in range(2):   # two processes on one port (SO_REUSEPORT): both cores
                for args in ([HTTP_IP, str(PLAIN_PORT)], [HTTPS_IP, str(TLS_PORT), cert, key]):
                    processes.append(_started(the_world.run_in(
                        topology.netns, [sys.executable, str(BENCH / "upstream.py"), *args],
                        stdout=subprocess.PIPE), "fast upstream"))
            _bare_client(the_world)
            processes.append(_started(the_world.run_in(
                host, [sys.executable, str(BENCH / "bare_mitmproxy.py"), str(BARE_PORT),
                       str(workdir / "bare-ca")], stdout=subprocess.PIPE), "bare mitmproxy"))
            yield the_world
        finally:
            for process in processes:
                process.kill()
                process.wait()
            topology.stop()
            with contextlib.suppress(Exception):
                netns.remove(the_world.bare_client)


def _bare_client(world: World) -> None:
    """A namespace whose every TCP connection the host namespace redirects to the bare
    mitmproxy (as sandgate's table does for sandboxes, minus everything else)."""
    netns.create(world.bare_client)
    link = f"{world.prefix}b0"
    with IPRoute(netns=world.host) as ipr:
        ipr.link("add", ifname=link, kind="veth",
                 peer={"ifname": f"{world.prefix}b1", "net_ns_fd": world.bare_client})
        (index,) = ipr.link_lookup(ifname=link)
        ipr.addr("add", index=index, address=BARE_LINK[0], prefixlen=30)
        ipr.link("set", index=index, state="up")
    with IPRoute(netns=world.bare_client) as ns:
        (inner,) = ns.link_lookup(ifname=f"{world.prefix}b1")
        ns.addr("add", index=inner, address=BARE_LINK[1], prefixlen=30)
        ns.link("set", index=inner, state="up")
        (lo,) = ns.link_lookup(ifname="lo")
        ns.link("set", index=lo, state="up")
        ns.route("add", dst="0.0.0.0/0", gateway=BARE_LINK[0])
    rules = (f"table inet bench_bare {{\n chain prerouting {{\n  type nat hook prerouting "
             f"priority dstnat;\n  iifname \"{link}\" meta l4proto tcp redirect to "
             f":{BARE_PORT}\n }}\n}}\n")
    subprocess.run(["nsenter", f"--net=/run/netns/{world.host}", "nft", "-f", "-"],
                   input=rules, text=True, check=True)


def settings_for(world: World, workers: int, slot: int = 0, **settings: object) -> Settings:
    """The settings of the world's gateway in `slot` (own names and ports, one database)."""
    assert world.topology.ca is not None
    config = Settings(home=world.workdir / f"gateway-{slot}",
                      policy_dir=world.workdir / f"policies-{slot}",
                      name_prefix=f"{world.prefix}{slot}",
                      database_url=f"sqlite:///{world.workdir / 'shared.db'}",
                      transparent_port=15001 + 100 * slot, dns_port=15053 + 100 * slot,
                      api_port=8700 + slot, upstream_resolver=DNS_IP,
                      upstream_ca=world.topology.ca.ca_cert, master_key=world.master_key,
                      workers=workers, **settings)  # type: ignore[arg-type]
    config.policy_dir.mkdir(parents=True, exist_ok=True)
    return config


@contextlib.contextmanager
def gateway_in(world: World, workers: int, slot: int = 0, **settings: object) -> Iterator[Client]:
    """A gateway with `workers` proxy workers in the world's host namespace. Gateways in
    different slots run side by side (own names and ports, one database: their sandbox
    addresses never collide)."""
    config = settings_for(world, workers, slot, **settings)
    with gateway(config, wrapper=["nsenter", f"--net=/run/netns/{world.host}"]), \
            Client(uds=str(config.control_socket)) as client:
        yield client
