"""The compiled policy: answers egress questions in time independent of unrelated rules."""

from __future__ import annotations

from dataclasses import dataclass

from policies.decision import Decision, Reason, allow, deny
from policies.hosts import HostIndex
from policies.schema import PolicySpec, RuleSpec


@dataclass(frozen=True, slots=True)
class CompiledRule:
    index: int          # position in the file: among allows, the first one wins
    spec: RuleSpec
    ports: frozenset[int]

    @property
    def id(self) -> str:
        return self.spec.id

    @property
    def is_deny(self) -> bool:
        return self.spec.action == "deny"

    def matches_port(self, port: int | None) -> bool:
        return not self.ports or (port is not None and port in self.ports)

    @property
    def covers_whole_host(self) -> bool:
        """A deny rule with no further condition takes the name out of DNS altogether."""
        return not self.ports


class CompiledPolicy:
    def __init__(self, spec: PolicySpec, version: str) -> None:
        self.spec = spec
        self.name = spec.name
        self.version = version
        self.rules = [
            CompiledRule(i, rule, frozenset(rule.ports)) for i, rule in enumerate(spec.rules)
        ]
        self._hosts: HostIndex[CompiledRule] = HostIndex()
        for rule in self.rules:
            for pattern in rule.spec.host_patterns():
                self._hosts.add(pattern, rule)

    def refuse(self, reason: Reason, rule: str | None = None) -> Decision:
        """A denial on behalf of this policy (the gateway's own checks use it too)."""
        return deny(reason, rule=rule, policy=self.name, policy_version=self.version)

    def _candidates(self, name: str) -> list[CompiledRule]:
        found = self._hosts.lookup(name)
        found.sort(key=lambda r: r.index)
        return found

    def decide_name(self, name: str) -> Decision:
        """May the sandbox learn an address for `name`? (the DNS question)"""
        candidates = self._candidates(name)
        for rule in candidates:
            if rule.is_deny and rule.covers_whole_host:
                return self.refuse(Reason.DENIED_BY_RULE, rule.id)
        for rule in candidates:
            if not rule.is_deny:
                return allow(rule.id, policy=self.name, policy_version=self.version)
        return self.refuse(Reason.NO_MATCHING_RULE)

    def decide(self, name: str, port: int) -> Decision:
        """May the sandbox reach `name` on `port`? Any matching deny rule wins."""
        matching = [r for r in self._candidates(name) if r.matches_port(port)]
        for rule in matching:
            if rule.is_deny:
                return self.refuse(Reason.DENIED_BY_RULE, rule.id)
        for rule in matching:
            return allow(rule.id, policy=self.name, policy_version=self.version)
        return self.refuse(Reason.NO_MATCHING_RULE)
