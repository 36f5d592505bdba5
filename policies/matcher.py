"""The compiled policy: answers egress questions in time independent of unrelated rules.

Candidates come from indexes (host names by hash and a reversed-label trie, addresses by
prefix length); only the few rules that name the destination are then checked in full.
"""

from __future__ import annotations

import enum
import fnmatch
import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from policies.decision import Decision, Reason, Verdict, allow
from policies.hosts import HostIndex, HostPattern
from policies.paths import (
    NO_PATH,
    AmbiguousPath,
    PathRank,
    canonical_path,
    path_matches,
    path_rank,
)
from policies.schema import PROTOCOLS, Budget, Inject, Limits, McpSpec, PolicySpec, RuleSpec

# What an allow rule without `protocols` speaks: HTTP, in clear or over TLS. Opaque streams
# (raw TCP, TLS that carries no HTTP) escape every HTTP-level check, so they must be asked for
# by name (`protocols: [tcp]`, `[tls]`). A deny rule without `protocols` covers every
# protocol, raw TCP included: a deny must never be sidestepped by speaking something else to
# the same host and port.
DEFAULT_PROTOCOLS = frozenset({"http", "https"})
HTTP_PROTOCOLS = DEFAULT_PROTOCOLS
ALL_PROTOCOLS = frozenset(PROTOCOLS)
# What a rule that injects a credential speaks unless it says otherwise: never clear text.
INJECT_PROTOCOLS = frozenset({"https"})

# Denials that monitor mode turns into `would_deny`: the policy's own judgement. The gateway's
# structural checks (fronting, refused addresses, unknown sandboxes) stay enforced.
MONITORABLE = frozenset({Reason.NO_MATCHING_RULE, Reason.DENIED_BY_RULE,
                         Reason.NOT_FROM_GATEWAY_DNS, Reason.AMBIGUOUS_PATH,
                         Reason.PROTOCOL_MISMATCH, Reason.MCP_TOOL_DENIED,
                         Reason.MCP_METHOD_DENIED, Reason.MCP_UNPARSEABLE,
                         Reason.APPROVAL_REQUIRED})


class Miss(enum.StrEnum):
    """The first condition of a rule a request failed (policies.report explains it)."""

    PORT = "port"
    PROTOCOL = "protocol"
    NOT_HTTP = "not_http"
    METHOD = "method"
    PATH = "path"
    QUERY = "query"
    HEADER = "header"


def host_rank(pattern: HostPattern) -> int:
    """How specific a host pattern is for the names it matches: an exact name over any
    wildcard, then a longer suffix over a shorter one (`*.api.github.com` > `*.github.com`)."""
    return 2 * (pattern.suffix.count(".") + 1) + (0 if pattern.subdomains else 1)


@dataclass(frozen=True, slots=True)
class Request:
    """One egress question. `host` is a normalised name, or None for an IP-literal dial;
    `path` as the client sent it (the policy matches its canonical form); `headers` by lower
    case name, every value of a repeated header."""

    port: int
    protocol: str                                   # http | https | tcp | tls
    host: str | None = None
    address: ipaddress.IPv4Address | None = None
    method: str | None = None
    path: str | None = None
    query: Mapping[str, Sequence[str]] = field(default_factory=dict)
    headers: Mapping[str, Sequence[str]] = field(default_factory=dict)

    @property
    def is_http(self) -> bool:
        return self.protocol in ("http", "https")


@dataclass(frozen=True, slots=True)
class CompiledRule:
    index: int          # global order: breaks a tie between equally specific allow rules
    spec: RuleSpec
    origin: str         # the policy the rule was written in
    id: str             # qualified with its origin when inherited through `extends`
    ports: frozenset[int]
    protocols: frozenset[str]
    methods: frozenset[str]
    networks: tuple[ipaddress.IPv4Network, ...]
    query: tuple[tuple[str, str, bool], ...]    # (name, glob, exactly_one)
    query_names: frozenset[str] | None          # with `only`: the names a request may carry
    path_ranks: tuple[tuple[str, PathRank], ...]  # the most specific glob first

    @property
    def is_deny(self) -> bool:
        return self.spec.action == "deny"

    @property
    def is_ask(self) -> bool:
        return self.spec.action == "ask"

    @property
    def covers_whole_host(self) -> bool:
        """A deny rule with no further condition takes the name out of DNS altogether."""
        s = self.spec
        return not (s.ports or s.protocols or s.http_only)

    def matches(self, request: Request, path: str | None) -> bool:
        """Everything but the destination, which the index already matched."""
        return not isinstance(self.judge(request, path), Miss)

    def failed(self, request: Request, path: str | None) -> Miss | None:
        """The first condition `request` fails, or None when the rule matches it."""
        return judged if isinstance(judged := self.judge(request, path), Miss) else None

    def judge(self, request: Request, path: str | None) -> Miss | PathRank:
        """The first condition `request` fails, or (it matches) the rank of its most specific
        path glob that matches, NO_PATH without one: each glob is matched once."""
        s = self.spec
        if self.ports and request.port not in self.ports:
            return Miss.PORT
        if request.protocol not in self.protocols:
            return Miss.PROTOCOL
        if not request.is_http:
            return Miss.NOT_HTTP if s.http_only else NO_PATH
        if self.methods and (request.method or "").upper() not in self.methods:
            return Miss.METHOD
        rank = self.path_rank(path) if self.path_ranks else NO_PATH
        if rank is None:
            return Miss.PATH
        if self.query and not self._query_matches(request.query):
            return Miss.QUERY
        if s.headers and not self._headers_match(request.headers):
            return Miss.HEADER
        return rank

    def _headers_match(self, headers: Mapping[str, Sequence[str]]) -> bool:
        """As for the query: an allow rule needs every value of a repeated header to match,
        a deny rule fires on any. An absent header is an empty value."""
        check = any if self.is_deny else all
        return all(check(fnmatch.fnmatchcase(v, glob) for v in headers.get(name) or ("",))
                   for name, glob in self.spec.headers.items())

    def _query_matches(self, query: Mapping[str, Sequence[str]]) -> bool:
        """An allow rule needs every value of each named parameter to match (a repeated
        parameter cannot smuggle a second value past it); a deny rule fires on any value."""
        for name, glob, exactly_one in self.query:
            values = query.get(name)
            if not values:
                return False
            if self.is_deny:
                if not any(fnmatch.fnmatchcase(v, glob) for v in values):
                    return False
                continue
            if exactly_one and len(values) != 1:
                return False
            if not all(fnmatch.fnmatchcase(v, glob) for v in values):
                return False
        names = self.query_names
        return names is None or all(name in names for name in query)

    def path_rank(self, path: str | None) -> PathRank | None:
        """The rank of the first (most specific) of this rule's globs that matches `path`,
        if one does."""
        if path is None:
            return None
        ignore_case = self.spec.paths_case_insensitive
        return next((rank for glob, rank in self.path_ranks
                     if path_matches(glob, path, ignore_case)), None)

    def on_port(self, port: int) -> bool:
        return not self.ports or port in self.ports

    @property
    def allows_http(self) -> bool:
        return not self.is_deny and bool(self.protocols & HTTP_PROTOCOLS)


def _protocols(rule: RuleSpec) -> frozenset[str]:
    if rule.protocols:
        return frozenset(rule.protocols)
    if rule.inject:
        return INJECT_PROTOCOLS
    if rule.http_only:  # HTTP conditions make an HTTP rule
        return HTTP_PROTOCOLS
    return ALL_PROTOCOLS if rule.action == "deny" else DEFAULT_PROTOCOLS


type Candidate = tuple[int, CompiledRule]   # (rank of the destination match, rule)
type Ranked = tuple[int, PathRank, CompiledRule]   # a matching rule: (destination, path) ranks


class AddressIndex:
    """Rules keyed by network; a lookup tries each prefix length present (at most 33)."""

    def __init__(self) -> None:
        self._by_length: dict[int, dict[int, list[CompiledRule]]] = {}

    def add(self, network: ipaddress.IPv4Network, rule: CompiledRule) -> None:
        table = self._by_length.setdefault(network.prefixlen, {})
        table.setdefault(int(network.network_address), []).append(rule)

    def lookup(self, address: ipaddress.IPv4Address) -> list[Candidate]:
        """(prefix length, rule) for every rule whose network holds `address`: a longer
        prefix is a more specific match."""
        found: list[Candidate] = []
        value = int(address)
        for length, table in self._by_length.items():
            mask = (0xFFFFFFFF << (32 - length)) & 0xFFFFFFFF
            found.extend((length, rule) for rule in table.get(value & mask, ()))
        return found


@dataclass(frozen=True, slots=True)
class Grant:
    """What an allowing decision carries to the gateway: the rule's limits, injections,
    permitted networks and MCP conditions (policies.mcp)."""

    limits: Limits | None
    inject: tuple[Inject, ...]
    networks: tuple[ipaddress.IPv4Network, ...]
    mcp: McpSpec | None = None
    budget: Budget | None = None


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
        self.budget = spec.budget
        ordered = rules if rules is not None else [(r, spec.name) for r in spec.rules]
        self.rules = [self._compile(i, rule, origin) for i, (rule, origin) in enumerate(ordered)]
        self._hosts: HostIndex[Candidate] = HostIndex()
        self._addresses = AddressIndex()
        for rule in self.rules:
            for pattern in rule.spec.host_patterns():
                self._hosts.add(pattern, (host_rank(pattern), rule))
            if not rule.spec.hosts:  # an address-only rule matches IP-literal dials
                for network in rule.networks:
                    self._addresses.add(network, rule)

    def _compile(self, index: int, rule: RuleSpec, origin: str) -> CompiledRule:
        only = any(q.only for q in rule.query.values())
        return CompiledRule(
            index=index, spec=rule, origin=origin,
            id=rule.id if origin == self.name else f"{origin}/{rule.id}",
            ports=frozenset(rule.ports), protocols=_protocols(rule),
            methods=frozenset(rule.methods),
            networks=tuple(ipaddress.IPv4Network(a) for a in rule.addresses),
            query=tuple((name, q.match, q.exactly_one) for name, q in rule.query.items()),
            query_names=frozenset(rule.query) if only else None,
            path_ranks=tuple(sorted(((glob, path_rank(glob)) for glob in rule.paths),
                                    key=lambda ranked: ranked[1], reverse=True)),
        )

    # decisions
    def refuse(self, reason: Reason, rule: str | None = None) -> Decision:
        """A denial on behalf of this policy; in monitor mode, policy-level denials become
        `would_deny` (allowed, and audited as such)."""
        verdict = Verdict.WOULD_DENY if self.monitor and reason in MONITORABLE else Verdict.DENY
        return Decision(verdict, reason, rule, self.name, self.version)

    def _allow(self, rule: CompiledRule, path: str | None = None) -> Decision:
        grant = Grant(rule.spec.limits, tuple(rule.spec.inject), rule.networks,
                      rule.spec.mcp, rule.spec.budget)
        if rule.is_ask:
            return self.ask(rule.id, grant, path)
        return allow(rule.id, policy=self.name, policy_version=self.version, grant=grant,
                     path=path)

    def ask(self, rule: str | None, grant: Grant | None = None,
            path: str | None = None) -> Decision:
        """A request held for a person (an `ask` rule, or `on_unmatched: ask`): refused with
        `approval_required` unless the gateway asks and someone allows it, when it goes out
        under `grant`. Monitor mode lets it through as `would_deny`."""
        verdict = Verdict.WOULD_DENY if self.monitor else Verdict.DENY
        return Decision(verdict, Reason.APPROVAL_REQUIRED, rule, self.name, self.version,
                        grant or Grant(None, (), ()), path)

    def _candidates(self, request: Request) -> list[Candidate]:
        if request.host is not None:
            return self._hosts.lookup(request.host)
        if request.address is not None:
            return self._addresses.lookup(request.address)
        return []

    def candidates(self, request: Request) -> list[CompiledRule]:
        """The rules that name the request's destination, in order (for explanations)."""
        return sorted({rule.index: rule for _, rule in self._candidates(request)}.values(),
                      key=lambda r: r.index)

    def decide_name(self, name: str) -> Decision:
        """May the sandbox learn an address for `name`? (the DNS question)"""
        deny: CompiledRule | None = None
        best: Candidate | None = None
        for rank, rule in self._hosts.lookup(name):
            if rule.is_deny:
                if rule.covers_whole_host and (deny is None or rule.index < deny.index):
                    deny = rule
            elif best is None or (rank, -rule.index) > (best[0], -best[1].index):
                best = (rank, rule)
        if deny is not None:
            return self.refuse(Reason.DENIED_BY_RULE, deny.id)
        if (best is not None and best[1].is_ask) or (best is None and self.asks_unmatched):
            # the name is answered; its requests are asked about one by one
            return Decision(Verdict.ALLOW, Reason.APPROVAL_REQUIRED,
                            best[1].id if best else None, self.name, self.version)
        if best is not None:
            return self._allow(best[1])
        return self.refuse(Reason.NO_MATCHING_RULE)

    @property
    def asks_unmatched(self) -> bool:
        return self.spec.on_unmatched == "ask"

    def decide(self, request: Request) -> Decision:
        """May this request (or stream) go out? Any matching deny rule wins; then the most
        specific matching allow rule (docs/POLICY.md, Precedence); otherwise no.

        Where a candidate rule has paths, the request's path is put in canonical form
        (policies.paths), which the allowing decision carries for the gateway to send
        upstream; a path with no one meaning is refused. An opaque stream (TCP, or TLS that
        does not carry HTTP) to a port where the rules speak HTTP is refused."""
        candidates = self._candidates(request)
        try:
            path = self._path(request, candidates)
        except AmbiguousPath:
            return self.refuse(Reason.AMBIGUOUS_PATH)
        decision = self._decide(request, candidates, path)
        if not request.is_http and self._wants_http(candidates, request.port, decision):
            return self.refuse(Reason.PROTOCOL_MISMATCH, decision.rule)
        return decision

    def canonical_path(self, request: Request) -> str | None:
        """The path the policy matches `request` by (and the gateway sends upstream), or None
        when no rule naming its destination has paths. Raises AmbiguousPath."""
        return self._path(request, self._candidates(request))

    @staticmethod
    def _path(request: Request, candidates: Sequence[Candidate]) -> str | None:
        if not request.is_http or request.path is None or \
                not any(rule.spec.paths for _, rule in candidates):
            return None
        return canonical_path(request.path)

    @staticmethod
    def _wants_http(candidates: Sequence[Candidate], port: int, decision: Decision) -> bool:
        """Must this opaque stream have been HTTP? Yes where a rule naming its destination and
        port has HTTP conditions (a stream would step past them: a leading CRLF is enough to
        make a proxy take an HTTP request for one), and, to say why, where it was refused
        only because the rules there speak HTTP."""
        on_port = [rule for _, rule in candidates if rule.on_port(port)]
        if decision.allowed:
            return any(rule.spec.http_only for rule in on_port)
        return decision.reason == Reason.NO_MATCHING_RULE and \
            any(rule.allows_http for rule in on_port)

    def _decide(self, request: Request, candidates: Sequence[Candidate],
                path: str | None) -> Decision:
        deny: CompiledRule | None = None
        allows: list[Ranked] = []
        for host, rule in candidates:
            judged = rule.judge(request, path)
            if isinstance(judged, Miss):
                continue
            if not rule.is_deny:
                allows.append((host, judged, rule))
            elif deny is None or rule.index < deny.index:
                deny = rule
        if deny is not None:
            return self.refuse(Reason.DENIED_BY_RULE, deny.id)
        if allows:
            return self._allow(most_specific(allows), path)
        if request.host is None:
            return self.refuse(Reason.NOT_FROM_GATEWAY_DNS)
        if self.asks_unmatched and request.is_http:   # opaque streams are never asked about
            return self.ask(None, path=path)
        return self.refuse(Reason.NO_MATCHING_RULE)


def most_specific(allows: Sequence[Ranked]) -> CompiledRule:
    """The allow rule that decides among several that match: the most specific destination
    match, then the most specific path glob; equal ones (a `policy check` error when their
    grants differ) go to the earlier rule."""
    if len(allows) == 1:
        return allows[0][2]
    return max(allows, key=lambda c: (c[0], c[1], -c[2].index))[2]
