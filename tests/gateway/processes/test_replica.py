"""A proxy worker's replica of the registry, as the hub's messages shape it."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from gateway.control.policy_store import PolicyStore
from gateway.dataplane.registry import Registry
from gateway.dataplane.state import GatewayState
from gateway.dataplane.upstream import UpstreamResolver
from gateway.processes import protocol
from gateway.processes.hub_client import HubClient
from gateway.processes.replica import Replica


class _Sink:
    def write(self, _data: bytes) -> None:
        return None


def replica(tmp_path: Path) -> tuple[Replica, Registry, list[str]]:
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "web.yaml").write_text(
        "version: 1\nname: web\nrules:\n  - id: web\n    hosts: [www.example.test]\n")
    registry = Registry()
    # the worker's hub client, its socket a sink (the hub is not part of this test)
    state = GatewayState(registry, UpstreamResolver("127.0.0.1"),
                         HubClient(None, _Sink()))  # type: ignore[arg-type]
    reopened: list[str] = []
    return (Replica(state, PolicyStore(policies), lambda: reopened.append("vault")),
            registry, reopened)


def add(tmp_path: Path, sandbox_id: str, ip: str = "10.77.0.2") -> protocol.Add:
    return protocol.Add(protocol.SandboxSnapshot(
        id=sandbox_id, ip=ip, policy=str(tmp_path / "policies" / "web.yaml"),
        network="198.18.0.0/24", assignments={"198.18.0.7": "www.example.test"},
        env={}, secrets={"TOKEN": "sgp_x"}, owner="o", quarantined=False), ack=1)


def through_the_wire(message: protocol.Message) -> protocol.Message:
    return protocol.decode(protocol.encode(message))


def test_add_map_quarantine_remove(tmp_path: Path) -> None:
    rep, registry, _ = replica(tmp_path)
    rep.apply(through_the_wire(add(tmp_path, "a")))
    added = registry.by_ip("10.77.0.2")
    assert added is not None and added.policy.name == "web"
    assert added.pool.name_for("198.18.0.7") == "www.example.test"
    binding = registry.placeholders.lookup("sgp_x")
    assert binding is not None and binding.sandbox_id == "a"
    rep.apply(through_the_wire(protocol.Mapped("a", "198.18.0.9", "b.example.test")))
    assert added.pool.name_for("198.18.0.9") == "b.example.test"
    rep.apply(through_the_wire(protocol.Quarantined("a")))
    assert added.quarantined
    hub = rep.state.coord
    assert isinstance(hub, HubClient)
    hub.active("a")
    rep.apply(through_the_wire(protocol.Remove("a", ack=2)))
    assert registry.by_ip("10.77.0.2") is None and registry.by_id("a") is None
    assert registry.placeholders.lookup("sgp_x") is None
    assert hub._active == {}                  # its activity entry forgotten too


def test_a_new_sandbox_on_an_address_replaces_any_stale_one(tmp_path: Path) -> None:
    rep, registry, _ = replica(tmp_path)
    rep.apply(add(tmp_path, "old"))
    rep.apply(add(tmp_path, "new"))        # the old one's removal never arrived
    current = registry.by_ip("10.77.0.2")
    assert current is not None and current.id == "new"
    assert registry.by_id("old") is None


def test_a_policy_that_does_not_load_leaves_the_sandbox_unknown(tmp_path: Path) -> None:
    rep, registry, _ = replica(tmp_path)
    message = add(tmp_path, "a")
    broken = dataclasses.replace(message, sandbox=dataclasses.replace(
        message.sandbox, policy=str(tmp_path / "policies" / "missing.yaml")))
    rep.apply(broken)
    assert registry.by_ip("10.77.0.2") is None   # refused as an unknown source: fail closed


def test_a_vault_change_reopens_the_vault(tmp_path: Path) -> None:
    rep, _, reopened = replica(tmp_path)
    rep.apply(through_the_wire(protocol.VaultChanged(ack=3)))
    assert reopened == ["vault"]
