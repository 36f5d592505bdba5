"""The compiled policy: answers egress questions in time independent of unrelated rules.

Candidates come from indexes (host names by hash and a reversed-label trie, addresses by
prefix length); only the few rules that name the destination are then checked in full.
"""

from __future__ import annotations

import fnmatch
import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from policies.decision import Decision, Reason, Verdict, allow
from policies.hosts import HostIndex
from policies.paths import AmbiguousPath, normalise_path, path_matches
from policies.schema import Inject, Limits, PolicySpec, RuleSpec

# What a rule without `protocols` speaks. Raw TCP is not among them: an opaque stream escapes
# every HTTP-level check, so it must be asked for by name (`protocols: [tcp]`).
DEFAULT_PROTOCOLS = frozenset({"http", "https", "tls"})
# What a rule that injects a credential speaks unless it says otherwise: never clear text.
INJECT_PROTOCOLS = frozenset({"https"})

# Denials that monitor mode turns into `would_deny`: the policy's own judgement. The gateway's
# structural checks (fronting, refused addresses, unknown sandboxes) stay enforced.
MONITORABLE = frozenset({Reason.NO_MATCHING_RULE, Reason.DENIED_BY_RULE,
                         Reason.NOT_FROM_GATEWAY_DNS, Reason.AMBIGUOUS_PATH})


@dataclass(frozen=True, slots=True)
class Request:
    """One egress question. `host` is a normalised name, or None for an IP-literal dial."""

    port: int
    protocol: str                                   # http | https | tcp | tls
    host: str | None = None
    address: ipaddress.IPv4Address | None = None
    method: str | None = None
    path: str | None = None
    query: Mapping[str, Sequence[str]] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)

    @property
    def is_http(self) -> bool:
        return self.protocol in ("http", "https")


@dataclass(frozen=True, slots=True)
class CompiledRule:
    index: int          # global order: among allows, the first one wins
    spec: RuleSpec
    origin: str         # the policy the rule was written in
    id: str             # qualified with its origin when inherited through `extends`
    ports: frozenset[int]
    protocols: frozenset[str]
    methods: frozenset[str]
    networks: tuple[ipaddress.IPv4Network, ...]

    @property
    def is_deny(self) -> bool:
        return self.spec.action == "deny"

    @property
    def covers_whole_host(self) -> bool:
        """A deny rule with no further condition takes the name out of DNS altogether."""
        s = self.spec
        return not (s.ports or s.protocols or s.http_only)

    def matches(self, request: Request, path: str | None) -> bool:
        """Everything but the destination, which the index already matched."""
        s = self.spec
        if self.ports and request.port not in self.ports:
            return False
        if request.protocol not in self.protocols:
            return False
        if not request.is_http:
            return not s.http_only
        if self.methods and (request.method or "").upper() not in self.methods:
            return False
        if s.paths and (path is None or not any(path_matches(g, path) for g in s.paths)):
            return False
        for name, glob in s.query.items():
            values = request.query.get(name, ())
            if not any(fnmatch.fnmatchcase(v, glob) for v in values):
                return False
        for name, glob in s.headers.items():
            if not fnmatch.fnmatchcase(request.headers.get(name, ""), glob):
                return False
        return True


def _protocols(rule: RuleSpec) -> frozenset[str]:
    if rule.protocols:
        return frozenset(rule.protocols)
    if rule.inject:
        return INJECT_PROTOCOLS
    # HTTP conditions make an HTTP rule; otherwise the default set
    return frozenset({"http", "https"}) if rule.http_only else DEFAULT_PROTOCOLS


class AddressIndex:
    """Rules keyed by network; a lookup tries each prefix length present (at most 33)."""

    def __init__(self) -> None:
        self._by_length: dict[int, dict[int, list[CompiledRule]]] = {}

    def add(self, network: ipaddress.IPv4Network, rule: CompiledRule) -> None:
        table = self._by_length.setdefault(network.prefixlen, {})
        table.setdefault(int(network.network_address), []).append(rule)

    def lookup(self, address: ipaddress.IPv4Address) -> list[CompiledRule]:
        found: list[CompiledRule] = []
        value = int(address)
        for length, table in self._by_length.items():
            mask = (0xFFFFFFFF << (32 - length)) & 0xFFFFFFFF
            found.extend(table.get(value & mask, ()))
        return found


@dataclass(frozen=True, slots=True)
class Grant:
    """What an allowing decision carries to the gateway: the rule's limits and injections."""

    limits: Limits | None
    inject: tuple[Inject, ...]
    networks: tuple[ipaddress.IPv4Network, ...]


class CompiledPolicy:
    def __init__(self, spec: PolicySpec, version: str,
                 rules: Sequence[tuple[RuleSpec, str]] | None = None) -> None:
        """`rules`: (rule, origin policy) in order, own rules first, then inherited ones;
        defaults to the spec's own rules."""
        self.spec = spec
        self.name = spec.name
        self.version = version
        self.monitor = spec.mode == "monitor"
        self.limits = spec.limits
        ordered = rules if rules is not None else [(r, spec.name) for r in spec.rules]
        self.rules = [self._compile(i, rule, origin) for i, (rule, origin) in enumerate(ordered)]
        self._hosts: HostIndex[CompiledRule] = HostIndex()
        self._addresses = AddressIndex()
        for rule in self.rules:
            for pattern in rule.spec.host_patterns():
                self._hosts.add(pattern, rule)
            if not rule.spec.hosts:  # an address-only rule matches IP-literal dials
                for network in rule.networks:
                    self._addresses.add(network, rule)

    def _compile(self, index: int, rule: RuleSpec, origin: str) -> CompiledRule:
        return CompiledRule(
            index=index, spec=rule, origin=origin,
            id=rule.id if origin == self.name else f"{origin}/{rule.id}",
            ports=frozenset(rule.ports), protocols=_protocols(rule),
            methods=frozenset(rule.methods),
            networks=tuple(ipaddress.IPv4Network(a) for a in rule.addresses),
        )

    # decisions
    def refuse(self, reason: Reason, rule: str | None = None) -> Decision:
        """A denial on behalf of this policy; in monitor mode, policy-level denials become
        `would_deny` (allowed, and audited as such)."""
        verdict = Verdict.WOULD_DENY if self.monitor and reason in MONITORABLE else Verdict.DENY
        return Decision(verdict, reason, rule, self.name, self.version)

    def _allow(self, rule: CompiledRule) -> Decision:
        grant = Grant(rule.spec.limits, tuple(rule.spec.inject), rule.networks)
        return allow(rule.id, policy=self.name, policy_version=self.version, grant=grant)

    def _candidates(self, request: Request) -> list[CompiledRule]:
        if request.host is not None:
            found = self._hosts.lookup(request.host)
        elif request.address is not None:
            found = self._addresses.lookup(request.address)
        else:
            found = []
        if len(found) > 1:
            found.sort(key=lambda r: r.index)
        return found

    def decide_name(self, name: str) -> Decision:
        """May the sandbox learn an address for `name`? (the DNS question)"""
        candidates = self._hosts.lookup(name)
        candidates.sort(key=lambda r: r.index)
        for rule in candidates:
            if rule.is_deny and rule.covers_whole_host:
                return self.refuse(Reason.DENIED_BY_RULE, rule.id)
        for rule in candidates:
            if not rule.is_deny:
                return self._allow(rule)
        return self.refuse(Reason.NO_MATCHING_RULE)

    def decide(self, request: Request) -> Decision:
        """May this request (or stream) go out? Any matching deny rule wins; then the first
        matching allow rule; otherwise no."""
        candidates = self._candidates(request)
        path = None
        if request.is_http and request.path is not None:
            try:
                path = normalise_path(request.path)
            except AmbiguousPath:
                if any(r.spec.paths for r in candidates):
                    return self.refuse(Reason.AMBIGUOUS_PATH)
        matching = [r for r in candidates if r.matches(request, path)]
        for rule in matching:
            if rule.is_deny:
                return self.refuse(Reason.DENIED_BY_RULE, rule.id)
        if matching:
            return self._allow(matching[0])
        if request.host is None:
            return self.refuse(Reason.NOT_FROM_GATEWAY_DNS)
        return self.refuse(Reason.NO_MATCHING_RULE)

