"""The self-test's world, all of it throw-away: a "host" network namespace for a gateway of
its own (so nothing of the real host is touched: not its routes, not a running gateway's
ports or addresses), the throw-away internet beside it, and the policy's names pointed at that
internet's servers."""

from __future__ import annotations

import contextlib
import secrets
import string
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pyroute2 import IPRoute, netns

from gateway.client import Client
from gateway.processes.launch import gateway
from gateway.selftest.plan import Plan
from gateway.settings import Settings
from sandbox_net.testnet import DNS_IP, OTHER_IP, TRAPS, Topology


def new_prefix() -> str:
    return "s" + "".join(secrets.choice(string.ascii_lowercase + string.digits)
                         for _ in range(3))


@dataclass
class World:
    prefix: str
    topology: Topology
    client: Client
    settings: Settings

    @property
    def host_netns(self) -> str:
        return host_netns(self.prefix)


def host_netns(prefix: str) -> str:
    return f"{prefix}-host"


def zone_for(plan: Plan, address_of: dict[str, str] | None = None) -> dict[str, str | list[str]]:
    """DNS answers: each probed name at its server (or at `address_of[name]`), the denied name
    at a live server too, so a gateway that let it through would be caught reaching it."""
    zone: dict[str, str | list[str]] = {
        p.host: (address_of or {}).get(p.host, p.address) for p in plan.probes}
    if plan.denied_name:
        zone[plan.denied_name] = OTHER_IP
    return zone


@contextlib.contextmanager
def world(plan: Plan, workdir: Path) -> Iterator[World]:
    prefix = new_prefix()
    with host_namespace(host_netns(prefix)):
        topology = Topology(prefix, workdir / "inet", traps=TRAPS, extra_zone=zone_for(plan),
                            tls_names=[p.host for p in plan.probes],
                            host_netns=host_netns(prefix), dns_ttl=0)
        topology.start()
        try:
            assert topology.ca is not None
            settings = Settings(home=workdir / "gateway", policy_dir=workdir / "policies",
                                name_prefix=prefix, upstream_resolver=DNS_IP,
                                upstream_ca=topology.ca.ca_cert)
            settings.policy_dir.mkdir(parents=True)
            nsenter = ["nsenter", f"--net=/run/netns/{host_netns(prefix)}"]
            with gateway(settings, wrapper=nsenter), \
                    Client(uds=str(settings.control_socket)) as client:
                yield World(prefix, topology, client, settings)
        finally:
            topology.stop()


@contextlib.contextmanager
def host_namespace(name: str) -> Iterator[None]:
    """A namespace standing in for the host, forwarding on (the worst case: only the
    gateway's drop rules stand between a sandbox and the network)."""
    netns.create(name)
    try:
        with IPRoute(netns=name) as ipr:
            (lo,) = ipr.link_lookup(ifname="lo")
            ipr.link("set", index=lo, state="up")
        subprocess.run(["nsenter", f"--net=/run/netns/{name}", "sh", "-c",
                        "echo 1 > /proc/sys/net/ipv4/ip_forward"], check=True)
        yield
    finally:
        netns.remove(name)
