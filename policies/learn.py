"""`sandgate policy learn`: a least-privilege policy from recorded requests.

Each name seen becomes a rule's host, except that N or more names under one registrable
domain (the public suffix list decides what is registrable, so never `*.co.uk`) become one
wildcard; names that had a credential injected always stay exact. HTTP requests give
methods and path globs, the paths generalised segment by segment (ids, UUIDs, hashes, numbers
and versions become `*`), and the globs that share a set of methods share a rule. Streams
give `protocols: [tcp]` or `[tls]` and their ports. A credential is bound where the recording
rule injected one (the audit row names the secret; the recording policy gives its form).

Only requests that went out are learned (allowed, or `would_deny` in monitor mode): never a
denial, and never a secret-exfiltration attempt. The YAML is rendered by learn_yaml.py.
"""

from __future__ import annotations

import functools
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from publicsuffixlist import PublicSuffixList

from policies.decision import Verdict
from policies.matcher import CompiledPolicy
from policies.paths import AmbiguousPath, canonical_path
from policies.precedence import ties
from policies.recorded import Recorded
from policies.schema import Inject, PolicySpec, RuleSpec

MIN_SIBLINGS = 5      # names under one registrable domain before they become a wildcard
MAX_GLOBS = 32        # path globs in one rule before they fold into `/first-segment/**`
MIN_VARIANTS = 3      # globs differing in one segment only, before that segment becomes `*`
EXAMPLES = 3          # example paths kept per glob

_NUMBER = re.compile(r"^\d+$")
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.I)
_HASH = re.compile(r"^(?=[^g-z]*\d)[0-9a-f]{7,}$", re.I)      # hex with a digit: sha, md5
_VERSION = re.compile(r"^v?\d+(\.\d+)+([-+.][0-9A-Za-z.-]+)?$")  # 1.2, v2.0.1, 1.0.0-rc1
_TOKEN = re.compile(r"^(?=.*\d)(?=.*[A-Za-z])[A-Za-z0-9_-]{20,}$")  # long opaque ids
_VERSION_INSIDE = re.compile(r"(?<![0-9A-Za-z])v?\d+(\.\d+)+(?![0-9])")

type RuleLookup = Callable[[str | None, str | None], RuleSpec | None]


@functools.cache
def _suffixes() -> PublicSuffixList:
    return PublicSuffixList()   # the list the package ships: no download


def generalise_segment(segment: str) -> str:
    """`*` for a segment that names one thing among many (an id, a UUID, a hash, a number,
    a version, a long opaque token); a file name keeps its shape with the version starred
    (`pkg-1.2.3.tar.gz` -> `pkg-*.tar.gz`). API version prefixes such as `v1` stay: they
    name an API, not a value."""
    if "*" in segment:
        return "*"     # a literal star would read as a glob
    if any(p.match(segment) for p in (_NUMBER, _UUID, _HASH, _VERSION, _TOKEN)):
        return "*"
    return _VERSION_INSIDE.sub("*", segment)


def generalise_path(path: str) -> str:
    """A path glob for one canonical path, segment by segment."""
    return "/" + "/".join(generalise_segment(s) if s else s for s in path.split("/")[1:])


def group_hosts(names: Iterable[str], exact: Iterable[str] = (),
                min_siblings: int = MIN_SIBLINGS) -> dict[str, str]:
    """name -> the host pattern its rule names: a wildcard over the registrable domain when
    `min_siblings` or more names sit under it (`.domain` when the domain itself is one of
    them), the name itself otherwise and for every name in `exact`."""
    names, pinned = set(names), set(exact)
    under: dict[str, set[str]] = defaultdict(set)
    for name in names - pinned:
        domain = _suffixes().privatesuffix(name)
        if domain is not None:    # None: the name is a public suffix, or unknown to it
            under[domain].add(name)
    chosen = {name: name for name in names}
    for domain, siblings in under.items():
        if len(siblings) >= min_siblings:
            pattern = ("." if domain in siblings else "*.") + domain
            chosen.update(dict.fromkeys(siblings, pattern))
    return chosen


@dataclass
class Hits:
    """How often a rule (or a glob) was used, and when."""

    count: int = 0
    first: datetime | None = None
    last: datetime | None = None

    def add(self, when: datetime) -> None:
        self.count += 1
        self.first = when if self.first is None else min(self.first, when)
        self.last = when if self.last is None else max(self.last, when)

    def merge(self, other: Hits) -> None:
        for when in (other.first, other.last):
            if when is not None:
                self.first = when if self.first is None else min(self.first, when)
                self.last = when if self.last is None else max(self.last, when)
        self.count += other.count


@dataclass
class Glob:
    methods: set[str] = field(default_factory=set)
    hits: Hits = field(default_factory=Hits)
    examples: list[str] = field(default_factory=list)
    inject: dict[Inject, None] = field(default_factory=dict)   # ordered set


@dataclass
class Destination:
    """Everything recorded for one host pattern (or address) and kind (http, tcp, tls)."""

    ports: set[int] = field(default_factory=set)
    protocols: set[str] = field(default_factory=set)
    globs: dict[str, Glob] = field(default_factory=dict)
    cleartext_inject: bool = False
    hits: Hits = field(default_factory=Hits)


@dataclass
class LearnedRule:
    spec: RuleSpec
    hits: Hits
    examples: dict[str, list[str]]     # glob -> example canonical paths


@dataclass
class Learned:
    """What `learn` found: rules to add, and what it left out and why."""

    rules: list[LearnedRule] = field(default_factory=list)
    used: int = 0          # requests that became rules
    covered: int = 0       # requests the starting policy allows already
    skipped: int = 0       # requests that did not go out (denied)
    unbound: list[str] = field(default_factory=list)   # injected secrets with no known form


def learn(records: Iterable[Recorded], *, base: CompiledPolicy | None = None,
          recording_rule: RuleLookup = lambda _policy, _rule: None,
          min_siblings: int = MIN_SIBLINGS, taken_ids: Sequence[str] = ()) -> Learned:
    """Rules for the requests in `records` that went out and that `base` (judged as if
    enforced) does not allow already. `recording_rule(policy, rule)` gives the rule that
    decided a recorded request, for the form of a credential it injected."""
    learned = Learned()
    todo: list[Recorded] = []
    for record in records:
        if not record.passed:
            learned.skipped += 1
        elif base is not None and base.decide(record.request()).verdict == Verdict.ALLOW:
            learned.covered += 1
        else:
            todo.append(record)
    learned.used = len(todo)
    bound = {r.host for r in todo if r.secrets}
    patterns = group_hosts({r.host for r in todo if r.address is None}, bound, min_siblings)
    destinations: dict[tuple[str, str], Destination] = {}
    for record in todo:
        host = patterns.get(record.host, record.host)
        # a bound host's plain-HTTP and HTTPS requests get rules of their own: the
        # credential goes only where the recording rule sent it
        kind = record.protocol if record.host in bound or not record.is_http else "http"
        dest = destinations.setdefault((host, kind), Destination())
        _observe(dest, record, recording_rule, learned.unbound)
    ids = set(taken_ids)
    for (host, kind), dest in sorted(destinations.items()):
        learned.rules.extend(_rules(host, kind, dest, ids))
    return learned


def _observe(dest: Destination, record: Recorded, recording_rule: RuleLookup,
             unbound: list[str]) -> None:
    dest.ports.add(record.port)
    dest.protocols.add(record.protocol)
    dest.hits.add(record.time)
    if not record.is_http:
        return
    try:
        path = canonical_path(record.path or "/")
    except AmbiguousPath:
        return       # refused by any rule with paths (ambiguous_path): nothing to learn
    glob = dest.globs.setdefault(generalise_path(path), Glob())
    if record.secrets:
        spec = recording_rule(record.policy, record.rule)
        forms = [i for i in (spec.inject if spec else ()) if i.secret in record.secrets]
        glob.inject.update(dict.fromkeys(forms))
        dest.cleartext_inject |= bool(spec and spec.allow_cleartext_inject)
        known = {i.secret for i in forms}
        unbound.extend(s for s in record.secrets if s not in known and s not in unbound)
    glob.methods.add((record.method or "GET").upper())
    glob.hits.add(record.time)
    if path not in glob.examples and len(glob.examples) < EXAMPLES:
        glob.examples.append(path)


def _rules(host: str, kind: str, dest: Destination, ids: set[str]) -> list[LearnedRule]:
    where = {"addresses": [host]} if _is_address(host) else {"hosts": [host]}
    ports = sorted(dest.ports)
    if kind not in ("http", "https"):
        stream = {**where, "ports": ports, "protocols": [kind]}
        return [_rule(_id(host, kind, ids), stream, dest.hits, {})]
    rules = _http_rules(host, where, ports, dest, ids, per_glob=True)
    if _tied(rules):
        # a path two rules with different credentials both match: one binding for the host
        for rule in rules:
            ids.discard(rule.spec.id)
        rules = _http_rules(host, where, ports, dest, ids, per_glob=False)
    return rules


def _http_rules(host: str, where: dict[str, list[str]], ports: list[int], dest: Destination,
                ids: set[str], per_glob: bool) -> list[LearnedRule]:
    """One rule per (credentials, methods): a credential is bound only on the globs whose
    requests carried it, unless `per_glob` is off (then on all of the host's globs)."""
    everywhere = {i: None for glob in dest.globs.values() for i in glob.inject}
    by_grant: dict[tuple[tuple[Inject, ...], frozenset[str]], dict[str, Glob]] = \
        defaultdict(dict)
    for text, glob in _folded(_merged(dest.globs)).items():
        inject = tuple(glob.inject if per_glob else everywhere)
        by_grant[(inject, frozenset(glob.methods))][text] = glob
    rules = []
    for (inject, methods), globs in sorted(by_grant.items(), key=_grant_order):
        hits = Hits()
        for glob in globs.values():
            hits.merge(glob.hits)
        spec: dict[str, object] = {**where, "ports": ports, "protocols": sorted(dest.protocols),
                                   "methods": sorted(methods), "paths": sorted(globs)}
        if inject:
            spec["inject"] = list(inject)
            spec["allow_cleartext_inject"] = dest.cleartext_inject or None
        suffix = "-".join(sorted(methods)).lower() if len(by_grant) > 1 else ""
        rules.append(_rule(_id(host, suffix, ids), spec, hits,
                           {t: g.examples for t, g in sorted(globs.items())}))
    return rules


def _grant_order(item: tuple[tuple[tuple[Inject, ...], frozenset[str]], object]) -> \
        tuple[int, list[str]]:
    (inject, methods), _ = item
    return len(inject), sorted(methods)


def _tied(rules: list[LearnedRule]) -> bool:
    if len({tuple(r.spec.inject) for r in rules}) < 2:
        return False
    spec = PolicySpec(version=1, name="learned", rules=[r.spec for r in rules])
    return bool(ties(CompiledPolicy(spec, "-")))


def _merged(globs: dict[str, Glob]) -> dict[str, Glob]:
    """Globs used alike (same methods and credentials) that differ in one segment only,
    MIN_VARIANTS or more of them, become one with `*` there: `/simple/requests/`,
    `/simple/idna/`, `/simple/certifi/` are `/simple/*/`."""
    merged = dict(globs)
    depth = max((text.count("/") for text in merged), default=0)
    for position in range(depth, 0, -1):
        variants: dict[tuple[str, frozenset[str], tuple[Inject, ...]], list[str]] = \
            defaultdict(list)
        for text, glob in merged.items():
            parts = text.split("/")
            if position < len(parts) and parts[position] not in ("", "*"):
                starred = "/".join([*parts[:position], "*", *parts[position + 1:]])
                key = (starred, frozenset(glob.methods), tuple(glob.inject))
                variants[key].append(text)
        for (glob_text, _, _), texts in variants.items():
            if len(texts) >= MIN_VARIANTS:
                into = merged.setdefault(glob_text, Glob())
                for text in texts:
                    _absorb(into, merged.pop(text))
    return merged


def _absorb(into: Glob, glob: Glob) -> None:
    into.methods |= glob.methods
    into.inject.update(glob.inject)
    into.hits.merge(glob.hits)
    into.examples.extend(e for e in glob.examples[: EXAMPLES - len(into.examples)]
                         if e not in into.examples)


def _folded(globs: dict[str, Glob]) -> dict[str, Glob]:
    """More globs than a reviewer reads become one `/first-segment/**` each (a literal
    segment; the others stay as they are)."""
    if len(globs) <= MAX_GLOBS:
        return globs
    folded: dict[str, Glob] = {}
    for text, glob in globs.items():
        first = text.split("/")[1]
        # only under a literal first segment: `/**` or `/*/**` would open every path of the
        # host (and any credential bound on it), from paths the sandbox chose
        if first and "*" not in first:
            _absorb(folded.setdefault(f"/{first}/**", Glob()), glob)
        else:
            _absorb(folded.setdefault(text, Glob()), glob)
    return folded


def _rule(rule_id: str, fields: dict[str, object], hits: Hits,
          examples: dict[str, list[str]]) -> LearnedRule:
    data = {"id": rule_id, **{k: v for k, v in fields.items() if v is not None}}
    return LearnedRule(RuleSpec.model_validate(data), hits, examples)


def _is_address(host: str) -> bool:
    return bool(re.fullmatch(r"[0-9.]+", host))


def _id(host: str, suffix: str, taken: set[str]) -> str:
    """A rule id from the host: `api.example.com`, `any.example.com` for `*.example.com`,
    with the methods or stream kind after a colon when a host has several rules."""
    stem = ("any." + host[2:]) if host.startswith("*.") else host.lstrip(".")
    stem = (stem + (f":{suffix}" if suffix else ""))[:90]
    candidate, n = stem, 2
    while candidate in taken:
        candidate, n = f"{stem}-{n}", n + 1
    taken.add(candidate)
    return candidate
