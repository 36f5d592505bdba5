"""The nftables table that confines every sandbox link: rendered as one document, applied
atomically with `nft -f`, then read back and verified.

Rules match links by wildcard (`sgh-*`), so the table protects a link before it exists:
the table is applied first, links come up after. One set is per sandbox: `pins`, each link's
name with the one source address it may send from. Anything else arriving on a sandbox link
(a neighbour's address spoofed from a microVM guest, say) is dropped before DNS or the
redirect to the proxy sees it, so nothing is ever attributed to the wrong sandbox. A link
is pinned before it comes up and unpinned when it goes.
"""

from __future__ import annotations

import ipaddress
import json
import shutil
import subprocess
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Any

from sandbox_net.errors import FirewallError

# DNS queries per second one sandbox can get to the gateway's socket (over UDP); the gateway
# answers up to 500 at once (gateway.timing.DNS_QUERIES_PER_SECOND) and throttles the rest.
DNS_FLOOD_RATE = 1000
PINS = "pins"

type Pin = tuple[str, str]     # (host-side link name, the sandbox's address)


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
        # Before connection tracking and NAT: a packet from a sandbox link must carry the
        # source address pinned to that link.
        _Chain("guard", "filter", "prerouting", "raw", (
            ("spoofed-source", f"{links} meta nfproto ipv4 iifname . ip saddr != @{PINS} "
                               "counter drop"),
        )),
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


def _element(pin: Pin) -> str:
    link, address = pin
    return f'"{link}" . {ipaddress.IPv4Address(address)}'


def render(spec: FirewallSpec, pins: Iterable[Pin] = ()) -> str:
    """The whole table as one nft document, with `pins` in place. Applying it replaces any
    older version atomically."""
    lines = [
        f"table inet {spec.table} {{}}",
        f"delete table inet {spec.table}",
        f"table inet {spec.table} {{",
        f"  set {PINS} {{",
        "    type ifname . ipv4_addr;",
    ]
    elements = ", ".join(_element(pin) for pin in pins)
    if elements:
        lines.append(f"    elements = {{ {elements} }};")
    lines.append("  }")
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


def apply(spec: FirewallSpec, pins: Collection[Pin] = ()) -> None:
    """Install (or replace) the table with `pins`, then verify it. Raises FirewallError."""
    result = _nft("-f", "-", stdin=render(spec, pins))
    if result.returncode != 0:
        raise FirewallError(f"nft rejected the sandgate table: {result.stderr.strip()}")
    verify(spec, pins)


def pin(spec: FirewallSpec, link: str, address: str) -> None:
    """Let `link` send from `address` (and nothing else). Raises FirewallError."""
    result = _nft("add", "element", "inet", spec.table, PINS, f"{{ {_element((link, address))} }}")
    if result.returncode != 0:
        raise FirewallError(f"could not pin {link} to {address}: {result.stderr.strip()}")


def unpin(spec: FirewallSpec, link: str, address: str) -> None:
    """Forget `link`'s pin. Idempotent: a missing pin or table is no error."""
    _nft("delete", "element", "inet", spec.table, PINS, f"{{ {_element((link, address))} }}")


def _listing(spec: FirewallSpec) -> list[dict[str, Any]] | None:
    result = _nft("-j", "list", "table", "inet", spec.table)
    if result.returncode != 0:
        return None
    items: list[dict[str, Any]] = json.loads(result.stdout)["nftables"]
    return items


def is_present(spec: FirewallSpec) -> bool:
    return _listing(spec) is not None


def verify(spec: FirewallSpec, pins: Collection[Pin] = ()) -> None:
    """Read the table back from the kernel; raise FirewallError naming the first difference
    (a missing pin among `pins` is one)."""
    items = _listing(spec)
    if items is None:
        raise FirewallError(f"nftables table inet {spec.table} is missing")
    _verify_pins(spec, items, pins)
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


def _pins_of(items: list[dict[str, Any]]) -> set[Pin] | None:
    found = next((i["set"] for i in items if i.get("set", {}).get("name") == PINS), None)
    if found is None:
        return None
    return {(e["concat"][0], e["concat"][1]) for e in found.get("elem", ())
            if isinstance(e, dict) and "concat" in e}


def pinned(spec: FirewallSpec) -> set[Pin]:
    """The (link, address) pairs the kernel's pin set holds (none without the table)."""
    items = _listing(spec)
    return (_pins_of(items) or set()) if items is not None else set()


def _verify_pins(spec: FirewallSpec, items: list[dict[str, Any]],
                 pins: Collection[Pin]) -> None:
    present = _pins_of(items)
    if present is None:
        raise FirewallError(f"table inet {spec.table}: set {PINS} is missing")
    missing = [p for p in pins if (p[0], str(ipaddress.IPv4Address(p[1]))) not in present]
    if missing:
        raise FirewallError(f"table inet {spec.table}: {len(missing)} link(s) not pinned "
                            f"to their address, first {missing[0][0]}")


def remove(spec: FirewallSpec) -> None:
    if is_present(spec):
        result = _nft("delete", "table", "inet", spec.table)
        if result.returncode != 0 and is_present(spec):
            raise FirewallError(f"could not delete table inet {spec.table}: {result.stderr}")
