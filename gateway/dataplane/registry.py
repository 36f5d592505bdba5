"""What the gateway knows about live sandboxes: source address -> sandbox, its policy, and
its synthetic DNS map (names, not addresses: the sandbox never learns a real upstream IP)."""

from __future__ import annotations

import ipaddress
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from gateway.control.policy_store import PolicyHandle
from policies.matcher import CompiledPolicy
from vault.placeholders import PlaceholderIndex


class SyntheticPool:
    """Name <-> synthetic address map of one sandbox, from its own slice of 198.18.0.0/15.

    When the slice is full the least recently used name gives up its address; a sandbox that
    still dials the old address then reaches the new name, and Host/SNI checks refuse it."""

    def __init__(self, network: ipaddress.IPv4Network) -> None:
        self.network = network
        self._free = list(reversed(list(network.hosts())))
        self._by_name: OrderedDict[str, ipaddress.IPv4Address] = OrderedDict()
        self._by_address: dict[ipaddress.IPv4Address, str] = {}
        self.on_assign: Callable[[ipaddress.IPv4Address, str], None] | None = None

    def address_for(self, name: str) -> ipaddress.IPv4Address:
        address = self._by_name.get(name)
        if address is not None:
            self._by_name.move_to_end(name)
            return address
        if self._free:
            address = self._free.pop()
        else:
            _old, address = self._by_name.popitem(last=False)
            del self._by_address[address]
        self._by_name[name] = address
        self._by_address[address] = name
        if self.on_assign is not None:
            self.on_assign(address, name)
        return address

    def learn(self, address: str, name: str) -> None:
        """A replica takes an assignment made by the pool's owner."""
        ip = ipaddress.IPv4Address(address)
        old = self._by_address.get(ip)
        if old is not None:
            self._by_name.pop(old, None)
        self._by_address[ip] = name
        self._by_name[name] = ip

    def assignments(self) -> dict[str, str]:
        return {str(address): name for address, name in self._by_address.items()}

    def name_for(self, address: str | ipaddress.IPv4Address) -> str | None:
        try:
            return self._by_address.get(ipaddress.IPv4Address(address))
        except ValueError:
            return None

    def __contains__(self, address: object) -> bool:
        try:
            return ipaddress.IPv4Address(address) in self.network
        except ValueError:
            return False


@dataclass
class SandboxContext:
    id: str
    ip: str
    handle: PolicyHandle        # shared with every sandbox on the same policy file
    pool: SyntheticPool
    env: dict[str, str] = field(default_factory=dict)
    secrets: dict[str, str] = field(default_factory=dict)   # secret name -> placeholder
    quarantined: bool = False   # set by a secret-exfiltration attempt: nothing more goes out
    owner: str | None = None
    pod: str | None = None      # a Kubernetes pod's namespace/name (sandgate-cni)
    pod_uid: str | None = None
    last_active: float = field(default_factory=time.time)   # egress or exec, for idle timeout

    def pod_fields(self) -> dict[str, str]:
        """The pod identity every audit row of this sandbox carries (none for a sandbox)."""
        return {k: v for k, v in (("pod", self.pod), ("pod_uid", self.pod_uid)) if v}

    @property
    def policy(self) -> CompiledPolicy:
        """The policy's active version, read afresh for every decision (hot reload)."""
        return self.handle.policy


class RegistryListener:
    """Told of every change, after it is made (the hub forwards them to proxy workers)."""

    def added(self, sandbox: SandboxContext) -> None: ...

    def removed(self, sandbox: SandboxContext) -> None: ...

    def quarantined(self, sandbox: SandboxContext) -> None: ...

    def assigned(self, sandbox: SandboxContext, address: str, name: str) -> None: ...


class Registry:
    """Thread-safe: the control API registers sandboxes from worker threads while the proxy
    reads from its event loop."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_ip: dict[str, SandboxContext] = {}
        self._by_id: dict[str, SandboxContext] = {}
        self.placeholders = PlaceholderIndex()
        self.listener = RegistryListener()

    def add(self, sandbox: SandboxContext) -> None:
        with self._lock:
            if sandbox.ip in self._by_ip:
                raise ValueError(f"address {sandbox.ip} is already registered")
            self._by_ip[sandbox.ip] = sandbox
            self._by_id[sandbox.id] = sandbox
            self.placeholders.bind(sandbox.id, sandbox.secrets)
        sandbox.pool.on_assign = lambda address, name: self.listener.assigned(
            sandbox, str(address), name)
        self.listener.added(sandbox)

    def remove(self, sandbox_id: str) -> SandboxContext | None:
        with self._lock:
            sandbox = self._by_id.pop(sandbox_id, None)
            if sandbox is not None:
                self._by_ip.pop(sandbox.ip, None)
                self.placeholders.unbind(sandbox_id)
        if sandbox is not None:
            self.listener.removed(sandbox)
        return sandbox

    def quarantine(self, sandbox: SandboxContext) -> None:
        """Nothing more goes out for this sandbox (a secret-exfiltration attempt). The
        listener is told even when the sandbox is marked already: the main process's DNS
        server marks its copy first (the Authority calls this once per sandbox)."""
        sandbox.quarantined = True
        self.listener.quarantined(sandbox)

    def by_ip(self, ip: str) -> SandboxContext | None:
        return self._by_ip.get(ip)

    def by_id(self, sandbox_id: str) -> SandboxContext | None:
        return self._by_id.get(sandbox_id)

    def all(self) -> list[SandboxContext]:
        with self._lock:
            return list(self._by_id.values())
