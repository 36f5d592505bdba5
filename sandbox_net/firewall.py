"""The nftables table that confines every sandbox link: rendered as one document, applied
atomically with `nft -f`, then read back and verified.

Rules match links by wildcard (`sgh-*`), so the table protects a link before it exists:
the table is applied first, links come up after.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from typing import Any

from sandbox_net.errors import FirewallError

# DNS queries per second one sandbox can get to the gateway's socket (over UDP); the gateway
# answers up to 500 at once (gateway.timing.DNS_QUERIES_PER_SECOND) and throttles the rest.
DNS_FLOOD_RATE = 1000


@dataclass(frozen=True, slots=True)
class FirewallSpec:
    table: str
    link_glob: str
    transparent_port: int
    dns_port: int
    workers: int = 1    # proxy workers listen on transparent_port, transparent_port + 1, ...

    @property
    def transparent_ports(self) -> list[int]:
        return [self.transparent_port + i for i in range(self.workers)]

    def spread(self) -> str:
        """The redirect target: one port, or new connections spread over the workers by a
        hash of the source address and port (each connection stays with one worker)."""
        if self.workers == 1:
            return f":{self.transparent_port}"
        targets = ", ".join(f"{i} : {p}" for i, p in enumerate(self.transparent_ports))
        return f":jhash ip saddr . tcp sport mod {self.workers} map {{ {targets} }}"


@dataclass(frozen=True, slots=True)
class _Chain:
    name: str
    kind: str
    hook: str
    priority: str
    rules: tuple[tuple[str, str], ...]  # (comment, rule body)


def _chains(spec: FirewallSpec) -> tuple[_Chain, ...]:
    links = f'iifname "{spec.link_glob}"'
    ports = ", ".join(str(p) for p in spec.transparent_ports)
    dns = spec.dns_port
    return (
        _Chain("prerouting", "nat", "prerouting", "dstnat", (
            # DNS first: port 53 to the gateway's DNS server, over UDP and TCP.
            ("dns-udp", f"{links} meta nfproto ipv4 udp dport 53 redirect to :{dns}"),
            ("dns-tcp", f"{links} meta nfproto ipv4 tcp dport 53 redirect to :{dns}"),
            # Every other TCP port goes to the transparent proxy, which knows the dialed
            # address from conntrack (SO_ORIGINAL_DST).
            ("tcp", f"{links} meta nfproto ipv4 meta l4proto tcp redirect to {spec.spread()}"),
        )),
        _Chain("input", "filter", "input", "filter", (
            ("gateway-tcp", f"{links} meta nfproto ipv4 tcp dport {{ {ports} }} accept"),
            # A sandbox flooding DNS over UDP loses its excess here, in the kernel, before it
            # can fill the one socket every sandbox's queries share (counted; docs/AUDIT.md).
            ("dns-flood", f"{links} meta nfproto ipv4 udp dport {dns} meter dns_flood "
                          f"{{ ip saddr limit rate over {DNS_FLOOD_RATE}/second burst "
                          f"{DNS_FLOOD_RATE} packets }} counter drop"),
            ("gateway-dns", f"{links} meta nfproto ipv4 meta l4proto {{ tcp, udp }} "
                            f"th dport {dns} accept"),
            # Anything else a sandbox sends to the host (control API, sshd, ICMP, IPv6...)
            ("drop-input", f"{links} counter drop"),
            # The proxy ports serve sandboxes only: not the host's other networks.
            ("gateway-ports-private", f'iifname != "{spec.link_glob}" iifname != "lo" '
                                      f"meta l4proto {{ tcp, udp }} th dport {{ {ports}, {dns} }} "
                                      "drop"),
        )),
        # IP forwarding is on: the host must never route a sandbox packet anywhere.
        _Chain("forward", "filter", "forward", "filter", (
            ("drop-from-sandbox", f"{links} counter drop"),
            ("drop-to-sandbox", f'oifname "{spec.link_glob}" counter drop'),
        )),
    )


def render(spec: FirewallSpec) -> str:
    """The whole table as one nft document. Applying it replaces any older version atomically."""
    lines = [
        f"table inet {spec.table} {{}}",
        f"delete table inet {spec.table}",
        f"table inet {spec.table} {{",
    ]
    for chain in _chains(spec):
        lines.append(f"  chain {chain.name} {{")
        lines.append(f"    type {chain.kind} hook {chain.hook} priority {chain.priority}; "
                     "policy accept;")
        lines.extend(f'    {body} comment "{comment}"' for comment, body in chain.rules)
        lines.append("  }")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _nft(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("nft")
    if binary is None:
        raise FirewallError("nft not found; install nftables (apt-get install nftables)")
    return subprocess.run([binary, *args], input=stdin, capture_output=True, text=True,
                          check=False, timeout=30)


def apply(spec: FirewallSpec) -> None:
    """Install (or replace) the table, then verify it. Raises FirewallError."""
    result = _nft("-f", "-", stdin=render(spec))
    if result.returncode != 0:
        raise FirewallError(f"nft rejected the sandgate table: {result.stderr.strip()}")
    verify(spec)


def _listing(spec: FirewallSpec) -> list[dict[str, Any]] | None:
    result = _nft("-j", "list", "table", "inet", spec.table)
    if result.returncode != 0:
        return None
    items: list[dict[str, Any]] = json.loads(result.stdout)["nftables"]
    return items


def is_present(spec: FirewallSpec) -> bool:
    return _listing(spec) is not None


def verify(spec: FirewallSpec) -> None:
    """Read the table back from the kernel; raise FirewallError naming the first difference."""
    items = _listing(spec)
    if items is None:
        raise FirewallError(f"nftables table inet {spec.table} is missing")
    chains = {i["chain"]["name"]: i["chain"] for i in items if "chain" in i}
    comments: dict[str, list[str]] = {}
    for item in items:
        if "rule" in item:
            rule = item["rule"]
            comments.setdefault(rule["chain"], []).append(rule.get("comment", ""))
    for chain in _chains(spec):
        found = chains.get(chain.name)
        if found is None:
            raise FirewallError(f"table inet {spec.table}: chain {chain.name} is missing")
        if found.get("hook") != chain.hook or found.get("type") != chain.kind \
                or found.get("policy") != "accept":
            raise FirewallError(f"table inet {spec.table}: chain {chain.name} has the wrong hook")
        expected = [comment for comment, _ in chain.rules]
        if comments.get(chain.name, []) != expected:
            raise FirewallError(
                f"table inet {spec.table}: chain {chain.name} holds rules "
                f"{comments.get(chain.name, [])}, expected {expected}"
            )


def remove(spec: FirewallSpec) -> None:
    if is_present(spec):
        result = _nft("delete", "table", "inet", spec.table)
        if result.returncode != 0 and is_present(spec):
            raise FirewallError(f"could not delete table inet {spec.table}: {result.stderr}")
