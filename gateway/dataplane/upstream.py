"""Upstream resolution and the address check that follows it (stage two of every egress
decision: policy said yes to a *name*; now make sure the name's address is one we may dial)."""

from __future__ import annotations

import ipaddress
import logging
import socket
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import mitmproxy_rs

from policies.addresses import HARD_REFUSED, REFUSED_RANGES, classify
from policies.decision import Reason

if TYPE_CHECKING:
    from policies.matcher import Grant

logger = logging.getLogger(__name__)

type IPv4 = ipaddress.IPv4Address

# The ranges and their check live with the policy language, which `sandgate policy` tools
# share with the gateway; re-exported here for the data plane.
__all__ = ["HARD_REFUSED", "REFUSED_RANGES", "ResolveError", "UpstreamResolver", "Vetted",
           "classify"]


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

    def refusal(self, address: IPv4, grant: Grant | None) -> str | None:
        """Why `address` may not be dialed under `grant`, or None when it may."""
        return classify(address, self.own, grant.networks if grant else ())

    def vet_literal(self, address: IPv4,
                    permitted: Sequence[ipaddress.IPv4Network]) -> Vetted:
        """An IP-literal destination an address rule allowed."""
        why = classify(address, self.own, permitted)
        if why is not None:
            raise ResolveError(Reason.REFUSED_ADDRESS, f"{address} is refused ({why})")
        return Vetted(str(address), address)
