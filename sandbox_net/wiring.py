"""A sandbox's network, wired in the order that keeps it fail-closed and unwired in reverse:

    wire:    address slot -> rules verified -> namespace + link (down) -> link pinned to
             the sandbox's address -> rules and pin verified -> link up
    unwire:  pin removed -> link and namespace removed -> slot released

`SandboxNetwork` is the narrow interface the control plane uses; `HostNetwork` is the real
one (pyroute2, nftables, the slot table); tests use an in-memory double.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy.engine import Engine

from sandbox_net import cgroups, firewall, links, slots
from sandbox_net.addressing import SlotAddresses
from sandbox_net.errors import FirewallError, NetError
from sandbox_net.firewall import FirewallSpec, Pin
from sandbox_net.links import NetnsRef
from sandbox_net.names import Naming


@dataclass(frozen=True, slots=True)
class Wired:
    """A sandbox's link, up, with its rules verified in place."""

    sandbox_id: str
    netns_path: str
    ip: str                            # the sandbox's side of its link
    gateway_ip: str                    # the host's side: default route and DNS server
    synthetic: ipaddress.IPv4Network   # the slice its DNS answers come from


class SandboxNetwork(ABC):
    @abstractmethod
    def wire(self, sandbox_id: str) -> Wired:
        """Raise sandbox_net.errors.FirewallError when the rules are not in place, NetError
        for any other failure; nothing is left behind either way."""

    @abstractmethod
    def adopt(self, sandbox_id: str, holder: int | None = None) -> Wired:
        """Take back a sandbox wired by an earlier gateway process: its slot, namespace and
        link (up) must be in place; its pin is put back in force and verified. Its namespace
        is the one `holder`, a process of the sandbox, lives in: a name that is gone, empty
        or another namespace's is made again from it (sandbox_net.links.name_from). Raises
        NetError saying what is missing (FirewallError when the pin cannot be verified)."""

    @abstractmethod
    def attach(self, sandbox_id: str, netns: NetnsRef, ifname: str) -> Wired:
        """`wire`, into a namespace someone else made (a pod's), opened once and checked to
        be the one its caller saw: the sandbox's end of the link is `ifname` there. Raises
        as `wire`; `unwire` removes the link."""

    @abstractmethod
    def check(self, sandbox_id: str) -> None:
        """Raise FirewallError unless the rules and the sandbox's source pin are in force,
        NetError unless its link is up."""

    @abstractmethod
    def unwire(self, sandbox_id: str) -> None:
        """Remove whatever `wire` made for the sandbox. Idempotent."""

    @abstractmethod
    def netns_path(self, sandbox_id: str) -> str:
        """Where the sandbox's namespace is (or was)."""

    @abstractmethod
    def leftovers(self) -> set[str]:
        """Ids of sandboxes that have network state here (namespaces, links, slots,
        cgroups), live or left by an earlier run."""


class HostNetwork(SandboxNetwork):
    def __init__(self, engine: Engine, naming: Naming, rules: FirewallSpec, *,
                 gateway_id: str, host_id: str) -> None:
        self.engine = engine
        self.naming = naming
        self.rules = rules
        self.gateway_id = gateway_id
        self.host_id = host_id
        # The pins in force, and a lock held while one is added or removed and while the
        # table is checked and reinstalled: a reinstall from a list read before a concurrent
        # wire would drop that link's pin and cut it off.
        self._pinned: set[Pin] = set()
        self._pins_lock = threading.Lock()

    def wire(self, sandbox_id: str) -> Wired:
        return self._wire(sandbox_id, lambda addresses: links.create(
            self.naming, sandbox_id, addresses))

    def attach(self, sandbox_id: str, netns: NetnsRef, ifname: str) -> Wired:
        with links.opened(netns) as held:
            wired = self._wire(sandbox_id, lambda addresses: links.attach(
                self.naming, sandbox_id, addresses, held, ifname))
        return dataclasses.replace(wired, netns_path=netns.path)

    def _wire(self, sandbox_id: str,
              make_link: Callable[[SlotAddresses], links.SandboxLink]) -> Wired:
        addresses = slots.allocate(self.engine, sandbox_id, self.gateway_id, self.host_id)
        try:
            link = make_link(addresses)
            pin = (link.host_link, str(addresses.sandbox_ip))
            with self._pins_lock:
                firewall.pin(self.rules, *pin)
                self._pinned.add(pin)
            # fail closed: the host may forward packets, so the link comes up only once the
            # drop and redirect rules, and the link's source pin, are verified in the kernel.
            firewall.verify(self.rules, [pin])
            links.bring_up(link)
        except BaseException:
            self.unwire(sandbox_id)
            raise
        return Wired(sandbox_id, link.netns_path, str(addresses.sandbox_ip),
                     str(addresses.host_ip), addresses.synthetic)

    def adopt(self, sandbox_id: str, holder: int | None = None) -> Wired:
        addresses = slots.allocated(self.engine, self.gateway_id).get(sandbox_id)
        if addresses is None:
            raise NetError("its address slot is not this gateway's any more")
        if holder is None:   # the name alone may be an empty file or another namespace
            raise NetError("no process of it is left to show which namespace is its own")
        links.name_from(self.naming, sandbox_id, holder)
        problem = links.check(self.naming, sandbox_id, addresses)
        if problem is not None:
            raise NetError(problem)
        pin = (self.naming.host_link(sandbox_id), str(addresses.sandbox_ip))
        with self._pins_lock:
            firewall.pin(self.rules, *pin)
            self._pinned.add(pin)
        firewall.verify(self.rules, [pin])
        return Wired(sandbox_id, self.netns_path(sandbox_id), str(addresses.sandbox_ip),
                     str(addresses.host_ip), addresses.synthetic)

    def check(self, sandbox_id: str) -> None:
        addresses = slots.addresses_of(self.engine, sandbox_id)
        if addresses is None:
            raise NetError(f"sandbox {sandbox_id} holds no address slot")
        host_link = self.naming.host_link(sandbox_id)
        firewall.verify(self.rules, [(host_link, str(addresses.sandbox_ip))])
        if not links.is_up(host_link):
            raise NetError(f"link {host_link} is missing or down")

    def unwire(self, sandbox_id: str) -> None:
        addresses = slots.addresses_of(self.engine, sandbox_id)
        if addresses is not None:
            pin = (self.naming.host_link(sandbox_id), str(addresses.sandbox_ip))
            with self._pins_lock:
                self._pinned.discard(pin)
                firewall.unpin(self.rules, *pin)
        links.destroy(self.naming, sandbox_id)
        slots.release(self.engine, sandbox_id)

    def install_rules(self) -> None:
        """Install the nftables table with the pins in force (none before the first wire)."""
        with self._pins_lock:
            firewall.apply(self.rules, sorted(self._pinned))

    def restore_rules(self) -> str | None:
        """Check the table and every pin in force; when anything differs (an operator's
        mistake), reinstall the table with them and say what differed."""
        with self._pins_lock:
            pins = sorted(self._pinned)
            try:
                firewall.verify(self.rules, pins)
                extra = firewall.pinned(self.rules) - set(pins)
                if extra:   # a link allowed a second source address
                    raise FirewallError(f"{len(extra)} pin(s) not in force, first {min(extra)}")
            except FirewallError as e:
                firewall.apply(self.rules, pins)
                return str(e)
        return None

    def netns_path(self, sandbox_id: str) -> str:
        return str(links.NETNS_DIR / self.naming.netns(sandbox_id))

    def leftovers(self) -> set[str]:
        found = set(links.existing_ids(self.naming))
        found |= set(slots.allocated(self.engine, self.gateway_id))
        found |= {i for name in cgroups.existing(self.naming.prefix)
                  if (i := self.naming.id_from_netns(name))}
        return found
