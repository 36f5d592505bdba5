"""Upstream resolution and the address check that follows it (stage two of every egress
decision: policy said yes to a *name*; now make sure the name's address is one we may dial)."""

from __future__ import annotations

import ipaddress
import logging
import socket
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass

import mitmproxy_rs

from policies.decision import Reason

logger = logging.getLogger(__name__)

type IPv4 = ipaddress.IPv4Address

# Each range is refused because dialing it from the gateway would reach something other than
# the public service a policy names: the gateway host itself, its neighbours, or cloud control
# planes. A rule that lists such an address explicitly (`addresses`) unlocks it, except for
# the ranges in HARD_REFUSED, which no rule can open.
REFUSED_RANGES: tuple[tuple[ipaddress.IPv4Network, str], ...] = tuple(
    (ipaddress.IPv4Network(net), label) for net, label in (
        ("169.254.169.254/32", "metadata"),      # cloud instance metadata (credentials!)
        ("10.0.0.0/8", "private"),
        ("100.64.0.0/10", "cgnat"),
        ("169.254.0.0/16", "link-local"),
        ("172.16.0.0/12", "private"),
        ("192.0.0.0/24", "ietf-protocol"),
        ("192.168.0.0/16", "private"),
    )
)
HARD_REFUSED: tuple[tuple[ipaddress.IPv4Network, str], ...] = tuple(
    (ipaddress.IPv4Network(net), label) for net, label in (
        ("0.0.0.0/8", "this-network"),
        ("127.0.0.0/8", "loopback"),              # the gateway host's own services
        ("10.77.0.0/16", "sandbox-links"),        # other sandboxes and the host side of links
        ("198.18.0.0/15", "synthetic"),           # our own synthetic DNS answers
        ("224.0.0.0/4", "multicast"),
        ("240.0.0.0/4", "reserved"),              # includes 255.255.255.255
    )
)


def classify(ip: IPv4, own: frozenset[IPv4] = frozenset(),
             permitted: Sequence[ipaddress.IPv4Network] = ()) -> str | None:
    """Why `ip` may not be dialed, or None when it may. `permitted`: networks the allowing
    rule lists explicitly."""
    if ip in own:
        return "gateway-own"
    for network, label in HARD_REFUSED:
        if ip in network:
            return label
    if any(ip in network for network in permitted):
        return None
    for network, label in REFUSED_RANGES:
        if ip in network:
            return label
    return None


class ResolveError(Exception):
    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Vetted:
    name: str
    address: IPv4


type Lookup = Callable[[str], Awaitable[Sequence[str]]]


class UpstreamResolver:
    """Resolves names through the configured resolver (or the system's) and vets the answer.
    `lookup` replaces the resolver (unit tests answer from a table)."""

    def __init__(self, name_server: str | None, own_addresses: Iterable[IPv4] = (), *,
                 lookup: Lookup | None = None) -> None:
        if lookup is None:
            servers = [name_server] if name_server else \
                mitmproxy_rs.dns.get_system_dns_servers()
            lookup = mitmproxy_rs.dns.DnsResolver(name_servers=servers,
                                                  use_hosts_file=False).lookup_ipv4
        self._lookup = lookup
        self.own = frozenset(own_addresses)

    async def resolve(self, name: str,
                      permitted: Sequence[ipaddress.IPv4Network] = ()) -> Vetted:
        """Resolve `name` once and return the first address we may dial.

        Raises ResolveError with reason UPSTREAM_UNRESOLVABLE or REFUSED_ADDRESS."""
        try:
            answers = await self._lookup(name)
        except (OSError, socket.gaierror, ValueError) as e:
            raise ResolveError(Reason.UPSTREAM_UNRESOLVABLE, f"{name}: {e}") from None
        addresses = [ipaddress.IPv4Address(a) for a in answers]
        if not addresses:
            raise ResolveError(Reason.UPSTREAM_UNRESOLVABLE, f"{name}: no IPv4 address")
        refusals = []
        for address in addresses:
            why = classify(address, self.own, permitted)
            if why is None:
                return Vetted(name, address)
            refusals.append(f"{address} ({why})")
        raise ResolveError(Reason.REFUSED_ADDRESS,
                           f"{name} resolves only to refused addresses: " + ", ".join(refusals))

    def vet_literal(self, address: IPv4,
                    permitted: Sequence[ipaddress.IPv4Network]) -> Vetted:
        """An IP-literal destination an address rule allowed."""
        why = classify(address, self.own, permitted)
        if why is not None:
            raise ResolveError(Reason.REFUSED_ADDRESS, f"{address} is refused ({why})")
        return Vetted(str(address), address)
