"""Address plan: slot n of an installation gets a /30 for its link and a slice of synthetic
addresses for the gateway's DNS answers.

    link      10.77.0.0/16 split in /30s: network, host side (.1), sandbox side (.2), broadcast
    synthetic 198.18.0.0/15 split in /24s: one slice per slot, answers for that sandbox only
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

LINK_POOL = ipaddress.IPv4Network("10.77.0.0/16")
SYNTHETIC_POOL = ipaddress.IPv4Network("198.18.0.0/15")
SLICE_PREFIX = 24
LINK_PREFIX = 30
MAX_SLOTS = min(
    LINK_POOL.num_addresses // 4,
    2 ** (SLICE_PREFIX - SYNTHETIC_POOL.prefixlen),
)


@dataclass(frozen=True, slots=True)
class SlotAddresses:
    slot: int
    link: ipaddress.IPv4Network
    host_ip: ipaddress.IPv4Address
    sandbox_ip: ipaddress.IPv4Address
    synthetic: ipaddress.IPv4Network


def addresses_for(slot: int) -> SlotAddresses:
    if not 0 <= slot < MAX_SLOTS:
        raise ValueError(f"slot {slot} outside 0..{MAX_SLOTS - 1}")
    base = int(LINK_POOL.network_address) + 4 * slot
    link = ipaddress.IPv4Network((base, LINK_PREFIX))
    slice_size = 2 ** (32 - SLICE_PREFIX)
    synthetic = ipaddress.IPv4Network(
        (int(SYNTHETIC_POOL.network_address) + slice_size * slot, SLICE_PREFIX)
    )
    return SlotAddresses(
        slot=slot,
        link=link,
        host_ip=ipaddress.IPv4Address(base + 1),
        sandbox_ip=ipaddress.IPv4Address(base + 2),
        synthetic=synthetic,
    )
