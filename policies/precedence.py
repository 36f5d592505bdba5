"""What the precedence rules make of a whole policy: allow rules that tie (an error when the
choice between them changes what is granted), and rules that can never decide a request
(warnings for `sandgate policy check`).

A tie is proven with a witness: a concrete request both rules match at equal specificity,
built from their conditions and checked with the real matcher, so a tie is never reported
where none exists. Coverage (one rule matching everything another does) is claimed only when
it is certain.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import lru_cache

from policies.decision import Reason
from policies.globs import common_path, common_value, path_covers, value_covers
from policies.hosts import HostPattern
from policies.matcher import CompiledPolicy, CompiledRule, Request, host_rank
from policies.paths import NO_PATH, PathRank

HTTP = frozenset({"http", "https"})
PROTOCOL_ORDER = ("https", "http", "tls", "tcp")


@dataclass(frozen=True, slots=True)
class Finding:
    """A problem with `rule` (involving `other`, when there is one)."""

    rule: CompiledRule
    message: str
    other: CompiledRule | None = None


def grant(rule: CompiledRule) -> tuple[object, ...]:
    """What deciding by this rule gives a request beyond passage (or whether a person is
    asked first: an allow and an ask rule tied on one request are ambiguous too)."""
    s = rule.spec
    return (s.limits, tuple(s.inject), rule.networks, s.mcp, s.action, s.budget)


def _differences(a: CompiledRule, b: CompiledRule) -> list[str]:
    names = ("limits", "inject", "addresses", "mcp", "action", "budget")
    return [n for n, x, y in zip(names, grant(a), grant(b), strict=True) if x != y]


def _key(pattern: HostPattern) -> tuple[str, bool]:
    """Patterns that can match one name at equal specificity share this key."""
    return pattern.suffix, pattern.subdomains


def _host_groups(policy: CompiledPolicy, deny: bool) -> dict[tuple[str, bool],
                                                              list[tuple[HostPattern,
                                                                         CompiledRule]]]:
    groups: dict[tuple[str, bool], list[tuple[HostPattern, CompiledRule]]] = {}
    for rule in policy.rules:
        if rule.is_deny == deny:
            for pattern in rule.spec.host_patterns():
                groups.setdefault(_key(pattern), []).append((pattern, rule))
    return groups


# ties
def ties(policy: CompiledPolicy) -> list[Finding]:
    """Pairs of allow rules that match one request at equal specificity and grant different
    things: which one decides would be an accident of order."""
    found: dict[tuple[int, int], Finding] = {}
    for a, b, witness in _equal_pairs(policy):
        differ = _differences(a, b)
        if differ and (a.index, b.index) not in found:
            found[(a.index, b.index)] = Finding(
                b, f"ties with rule {a.id}: both match {witness} at equal specificity and "
                   f"they differ in {', '.join(differ)}; make one more specific (a narrower "
                   f"host or path) or merge them", a)
    return list(found.values())


def _equal_pairs(policy: CompiledPolicy) -> Iterator[tuple[CompiledRule, CompiledRule, str]]:
    """(earlier, later, witness) for allow rules with different grants that can decide one
    request as equals. Only rules whose grants differ are compared, so a policy of many
    rules on one host with one grant costs nothing here."""
    for entries in _host_groups(policy, deny=False).values():
        for (pa, a), (pb, b) in _across_grants(entries):
            if a is not b and _may_overlap(a, b):
                host = _common_name(pa, pb)
                witness = _witness(a, b, host, None) if host else None
                if witness is not None:
                    yield a, b, witness
    by_network: dict[ipaddress.IPv4Network, list[tuple[None, CompiledRule]]] = {}
    for rule in policy.rules:
        if not rule.is_deny and not rule.spec.hosts:
            for network in rule.networks:
                by_network.setdefault(network, []).append((None, rule))
    for network, rules in by_network.items():
        for (_, a), (_, b) in _across_grants(rules):
            if _may_overlap(a, b):
                witness = _witness(a, b, None, network.network_address)
                if witness is not None:
                    yield a, b, witness


def _across_grants[P](entries: list[tuple[P, CompiledRule]]) -> Iterator[
        tuple[tuple[P, CompiledRule], tuple[P, CompiledRule]]]:
    """Pairs of entries whose rules grant different things, the earlier rule first."""
    buckets: dict[tuple[object, ...], list[tuple[P, CompiledRule]]] = {}
    for entry in entries:
        buckets.setdefault(grant(entry[1]), []).append(entry)
    groups = list(buckets.values())
    for i, first in enumerate(groups):
        for second in groups[i + 1:]:
            for x in first:
                for y in second:
                    yield (x, y) if x[1].index < y[1].index else (y, x)


def _may_overlap(a: CompiledRule, b: CompiledRule) -> bool:
    """Cheap necessary conditions for a tie, before a witness is looked for."""
    if a.ports and b.ports and not a.ports & b.ports:
        return False
    if not a.protocols & b.protocols:
        return False
    if a.methods and b.methods and not a.methods & b.methods:
        return False
    if bool(a.path_ranks) != bool(b.path_ranks):
        return False    # a rule with paths is more specific wherever it matches
    if not a.path_ranks:
        return True
    if _rank_set(a.path_ranks).isdisjoint(_rank_set(b.path_ranks)):
        return False
    return any(_prefixes_meet(x, y) for x, _ in a.path_ranks for y, _ in b.path_ranks)


@lru_cache(maxsize=65536)
def _rank_set(ranks: tuple[tuple[str, PathRank], ...]) -> frozenset[PathRank]:
    return frozenset(rank for _, rank in ranks)


@lru_cache(maxsize=65536)
def _segments(glob: str) -> tuple[str, ...]:
    return tuple(glob.split("/")[1:])


def _prefixes_meet(a: str, b: str) -> bool:
    """Can two path globs match one path, judged segment by segment where that is cheap:
    their literal leading segments, and for fixed-depth globs every literal segment?"""
    x, y = _segments(a), _segments(b)
    for p, q in zip(x, y, strict=False):
        if "**" in (p, q):
            return True
        if "*" not in p and "*" not in q and p != q:
            return False
    return len(x) == len(y) or "**" in x[len(y):] + y[len(x):]


def _common_name(a: HostPattern, b: HostPattern) -> str | None:
    for name in (a.suffix, b.suffix, "x." + max(a.suffix, b.suffix, key=len)):
        if a.matches(name) and b.matches(name):
            return name
    return None


def _witness(a: CompiledRule, b: CompiledRule, host: str | None,
             address: ipaddress.IPv4Address | None) -> str | None:
    """A request both rules match at equal specificity, as text; None if none was found."""
    for request, path, text in _requests(a, b, host, address):
        if _rank(a, request, path) == _rank(b, request, path):
            return text
    return None


def sample_request(rule: CompiledRule) -> tuple[Request, str] | None:
    """A request `rule` matches (for `policy diff` to see who decides it), and its text."""
    patterns = rule.spec.host_patterns()
    if patterns:
        pattern = patterns[0]
        host: str | None = pattern.suffix if pattern.apex else "x." + pattern.suffix
        address = None
    elif rule.networks:
        host, address = None, rule.networks[0].network_address
    else:
        return None
    for request, _path, text in _requests(rule, rule, host, address):
        return request, text
    return None


def _requests(a: CompiledRule, b: CompiledRule, host: str | None,
              address: ipaddress.IPv4Address | None) -> Iterator[tuple[Request, str | None,
                                                                         str]]:
    """Requests (with their normalised path, and as text) that both rules match."""
    ports = (a.ports & b.ports) or a.ports or b.ports or frozenset({443})
    port = min(ports)
    target = host or str(address)
    for protocol in PROTOCOL_ORDER:
        if protocol not in a.protocols & b.protocols:
            continue
        if protocol not in HTTP:
            request = Request(port, protocol, host=host, address=address)
            if a.matches(request, None) and b.matches(request, None):
                yield request, None, f"{protocol}://{target}:{port}"
            continue
        methods = (a.methods & b.methods) or a.methods or b.methods or frozenset({"GET"})
        method = "GET" if "GET" in methods else min(methods)
        query = _values(a.spec.query, b.spec.query)
        headers = _values(a.spec.headers, b.spec.headers)
        if query is None or headers is None:
            continue
        for path in _paths(a, b):
            request = Request(port, protocol, host=host, address=address, method=method,
                              path=path, query={k: [v] for k, v in query.items()},
                              headers={k: [v] for k, v in headers.items()})
            if a.matches(request, path) and b.matches(request, path):
                text = f"{method} {protocol}://{target}:{port}{path}"
                if query:
                    text += "?" + "&".join(f"{k}={v}" for k, v in query.items())
                yield request, path, text


def _paths(a: CompiledRule, b: CompiledRule) -> Iterator[str]:
    ga, gb = a.spec.paths, b.spec.paths
    if not ga and not gb:
        yield "/"
        return
    for x in ga or ["/**"]:
        for y in gb or ["/**"]:
            if (path := common_path(x, y)) is not None:
                yield path


def _values(a: Mapping[str, object], b: Mapping[str, object]) -> dict[str, str] | None:
    """A value for every parameter (or header) either rule names that both accept."""
    out: dict[str, str] = {}
    for name in {**a, **b}:
        globs = [_glob(c[name]) for c in (a, b) if name in c]
        value = common_value(globs[0], globs[-1])
        if value is None:
            return None
        out[name] = value
    return out


def _glob(condition: object) -> str:
    return str(getattr(condition, "match", condition))


def _rank(rule: CompiledRule, request: Request, path: str | None) -> tuple[object, ...]:
    if request.host is not None:
        host = max(host_rank(p) for p in rule.spec.host_patterns() if p.matches(request.host))
    else:
        host = max(n.prefixlen for n in rule.networks if request.address in n)
    return host, rule.path_rank(path) or NO_PATH


# rules that never decide
def never_decide(policy: CompiledPolicy) -> list[Finding]:
    """Allow rules a deny rule always overrides (unreachable), and allow rules an earlier,
    equally specific allow rule with the same grant always pre-empts (shadowed)."""
    findings = []
    denies = _host_groups(policy, deny=True)
    allows = _host_groups(policy, deny=False)
    for rule in policy.rules:
        if rule.is_deny or not rule.spec.hosts:
            continue
        patterns = rule.spec.host_patterns()
        blockers = [_deny_covering(denies, p, rule) for p in patterns]
        if all(blockers):
            names = ", ".join(sorted({b.id for b in blockers if b is not None}))
            findings.append(Finding(rule, f"unreachable: deny rule {names} denies every "
                                          "request it allows; remove it or narrow the deny",
                                    blockers[0]))
            continue
        shadows = [_allow_covering(allows, p, rule) for p in patterns]
        if all(shadows) and shadows[0] is not None:
            findings.append(Finding(rule, f"shadowed: rule {shadows[0].id} comes first, is as "
                                          "specific and matches every request it does; "
                                          "remove one of them", shadows[0]))
    return findings


def refused_streams(policy: CompiledPolicy) -> list[Finding]:
    """Allow rules naming `tcp` or `tls` where the gateway refuses streams anyway: another
    rule for the same host and port has HTTP conditions (docs/POLICY.md, Protocols)."""
    findings = []
    for rule in policy.rules:
        opaque = sorted(rule.protocols - HTTP)
        if rule.is_deny or not opaque or not rule.spec.hosts:
            continue
        pattern = rule.spec.host_patterns()[0]
        host = pattern.suffix if pattern.apex else "x." + pattern.suffix
        port = min(rule.ports, default=443)
        decision = policy.decide(Request(port, opaque[0], host=host))
        if decision.reason == Reason.PROTOCOL_MISMATCH:
            findings.append(Finding(rule, f"{opaque[0]} streams to {host}:{port} are refused "
                                          "(protocol_mismatch): another rule for that host and "
                                          "port has HTTP conditions; give the stream its own "
                                          "port, or drop the conditions"))
    return findings


def _deny_covering(denies: dict[tuple[str, bool], list[tuple[HostPattern, CompiledRule]]],
                   pattern: HostPattern, rule: CompiledRule) -> CompiledRule | None:
    labels = pattern.suffix.split(".")
    for depth in range(len(labels)):
        suffix = ".".join(labels[depth:])
        for subdomains in (True, False):
            for deny_pattern, deny in denies.get((suffix, subdomains), ()):
                if _pattern_covers(deny_pattern, pattern) and _deny_covers(deny, rule):
                    return deny
    return None


def _allow_covering(allows: dict[tuple[str, bool], list[tuple[HostPattern, CompiledRule]]],
                    pattern: HostPattern, rule: CompiledRule) -> CompiledRule | None:
    for other_pattern, other in allows.get(_key(pattern), ()):
        if other.index < rule.index and grant(other) == grant(rule) \
                and _pattern_covers(other_pattern, pattern) and _allow_covers(other, rule):
            return other
    return None


def _pattern_covers(outer: HostPattern, inner: HostPattern) -> bool:
    if inner.apex and not outer.matches(inner.suffix):
        return False
    if not inner.subdomains:
        return True
    below = inner.suffix == outer.suffix or inner.suffix.endswith("." + outer.suffix)
    return outer.subdomains and below


def _common_conditions(outer: CompiledRule, inner: CompiledRule) -> bool:
    """Ports, protocols and methods of `outer` admit all those `inner` does."""
    if outer.ports and not (inner.ports and inner.ports <= outer.ports):
        return False
    if not inner.protocols <= outer.protocols:
        return False
    return not outer.methods or bool(inner.methods and inner.methods <= outer.methods)


def _deny_covers(deny: CompiledRule, rule: CompiledRule) -> bool:
    if not _common_conditions(deny, rule):
        return False
    d, r = deny.spec, rule.spec
    if d.paths and not (r.paths and all(any(path_covers(x, y) for x in d.paths)
                                        for y in r.paths)):
        return False
    if any(name not in r.query or not value_covers(q.match, r.query[name].match)
           for name, q in d.query.items()):
        return False
    return all(name in r.headers and value_covers(glob, r.headers[name])
               for name, glob in d.headers.items())


def _allow_covers(other: CompiledRule, rule: CompiledRule) -> bool:
    if not _common_conditions(other, rule):
        return False
    o, r = other.spec, rule.spec
    if not set(r.paths) <= set(o.paths) or bool(o.paths) != bool(r.paths):
        return False
    for name, q in o.query.items():
        mine = r.query.get(name)
        if mine is None or not value_covers(q.match, mine.match) or \
                (q.exactly_one and not mine.exactly_one):
            return False
    if other.query_names is not None and \
            (rule.query_names is None or not rule.query_names <= other.query_names):
        return False
    return all(name in r.headers and value_covers(glob, r.headers[name])
               for name, glob in o.headers.items())
