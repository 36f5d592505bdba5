"""A proxy worker's copy of the main process's registry, kept in step by the hub's messages
(gateway.processes.protocol)."""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable
from typing import Any

from gateway.control.policy_store import PolicyStore
from gateway.dataplane.registry import SandboxContext, SyntheticPool
from gateway.dataplane.state import GatewayState
from gateway.processes import protocol

logger = logging.getLogger(__name__)


class Replica:
    def __init__(self, state: GatewayState, policies: PolicyStore,
                 reopen_vault: Callable[[], None]) -> None:
        self.state = state
        self.policies = policies
        self.reopen_vault = reopen_vault
        self._handlers: dict[type[Any], Callable[[Any], None]] = {
            protocol.Add: self._add,
            protocol.Remove: self._remove,
            protocol.Quarantined: self._quarantined,
            protocol.Mapped: self._mapped,
            protocol.VaultChanged: lambda _message: self.reopen_vault(),
            protocol.Synced: lambda _message: None,   # acknowledged by the worker's loop
        }

    def apply(self, message: protocol.Message) -> None:
        handler = self._handlers.get(type(message))
        if handler is None:
            logger.error("the hub sent an unexpected %s", type(message).__name__)
            return
        handler(message)

    def _remove(self, message: protocol.Remove) -> None:
        self.state.registry.remove(message.sandbox)
        self.state.coord.forget(message.sandbox)

    def _quarantined(self, message: protocol.Quarantined) -> None:
        sandbox = self.state.registry.by_id(message.sandbox)
        if sandbox is not None:
            sandbox.quarantined = True

    def _mapped(self, message: protocol.Mapped) -> None:
        sandbox = self.state.registry.by_id(message.sandbox)
        if sandbox is not None:
            sandbox.pool.learn(message.address, message.name)

    def _add(self, message: protocol.Add) -> None:
        data = message.sandbox
        registry = self.state.registry
        registry.remove(data.id)
        stale = registry.by_ip(data.ip)
        if stale is not None:   # its removal was missed (cannot happen in order; be sure)
            registry.remove(stale.id)
        pool = SyntheticPool(ipaddress.IPv4Network(data.network))
        for address, name in data.assignments.items():
            pool.learn(address, name)
        try:
            handle = self.policies.acquire(data.policy)
        except Exception:
            # Fail closed: without its policy this worker refuses the sandbox as unknown.
            logger.exception("worker cannot load policy %s of sandbox %s", data.policy, data.id)
            return
        registry.add(SandboxContext(
            id=data.id, ip=data.ip, handle=handle, pool=pool, env=data.env,
            secrets=data.secrets, quarantined=data.quarantined, owner=data.owner,
            pod=data.pod, pod_uid=data.pod_uid))
