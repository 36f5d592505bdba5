"""Which upstream addresses the gateway may dial (stage two of every egress decision: policy
said yes to a name; its address must be one we may dial). The gateway's resolver applies
this to every answer (gateway.dataplane.upstream); `sandgate policy check` and `policy test`
use it to say the truth about rules and requests that name such addresses."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

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


def never_dialable(network: ipaddress.IPv4Network) -> str | None:
    """The never-dialable range that holds all of `network`, if one does."""
    for refused, label in HARD_REFUSED:
        if network.subnet_of(refused):
            return label
    return None
