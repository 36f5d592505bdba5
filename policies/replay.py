"""`sandgate policy replay`: recorded requests judged again by a candidate policy, with the
gateway's own matcher, and what would change: requests that went out and would now be
denied, requests that were denied and would now be allowed.

A candidate in monitor mode is judged as if enforced (its `would_deny` is a denial): the
question is what the policy says, not what monitor mode would let through. What the audit
log does not keep cannot be replayed exactly: header values other than a few harmless ones
(a rule's `headers` condition sees them empty), query values that looked like credentials
(redacted), and bodies (a rule's `mcp:` conditions are not replayed).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from policies.decision import Decision, Verdict
from policies.matcher import CompiledPolicy
from policies.recorded import Recorded

SAMPLES = 3   # sample paths per group


@dataclass
class Group:
    """Requests that change the same way: one host, the rule that decided them when
    recorded, and the candidate's rule (or none) and reason."""

    host: str
    recorded_rule: str | None
    rule: str | None
    reason: str
    count: int = 0
    methods: set[str] = field(default_factory=set)
    samples: list[str] = field(default_factory=list)

    def add(self, record: Recorded) -> None:
        self.count += 1
        if record.method:
            self.methods.add(record.method)
        sample = f"{record.protocol}:{record.port}" if not record.is_http else \
            f"{record.method or '-'} {printable(record.path or '/')}"
        if sample not in self.samples and len(self.samples) < SAMPLES:
            self.samples.append(sample)

    def as_json(self) -> dict[str, Any]:
        return {"host": self.host, "recorded_rule": self.recorded_rule, "rule": self.rule,
                "reason": self.reason, "count": self.count, "methods": sorted(self.methods),
                "samples": self.samples}


@dataclass
class Replay:
    policy: str
    version: str
    replayed: int = 0
    unchanged: int = 0
    newly_denied: dict[tuple[str, str | None, str | None, str], Group] = field(
        default_factory=dict)
    newly_allowed: dict[tuple[str, str | None, str | None, str], Group] = field(
        default_factory=dict)

    @property
    def denied_count(self) -> int:
        return sum(g.count for g in self.newly_denied.values())

    @property
    def allowed_count(self) -> int:
        return sum(g.count for g in self.newly_allowed.values())

    def as_json(self) -> dict[str, Any]:
        return {"policy": self.policy, "version": self.version, "replayed": self.replayed,
                "unchanged": self.unchanged,
                "newly_denied": [g.as_json() for g in _ordered(self.newly_denied)],
                "newly_allowed": [g.as_json() for g in _ordered(self.newly_allowed)],
                "newly_denied_count": self.denied_count,
                "newly_allowed_count": self.allowed_count}


def printable(text: str) -> str:
    """A recorded path as a reviewer's terminal may show it: the sandbox chose it, and escape
    sequences or control characters in it could rewrite what the report says."""
    return "".join(c if " " <= c <= "~" else c.encode("unicode_escape").decode()
                   for c in text)


def _ordered(groups: dict[Any, Group]) -> list[Group]:
    return sorted(groups.values(), key=lambda g: (-g.count, g.host, g.rule or ""))


def judge(policy: CompiledPolicy, record: Recorded) -> Decision:
    """The candidate's decision for a recorded request, as the gateway would reach it:
    the DNS question first for a name (a name the policy takes out of DNS is never
    dialed), then the request itself."""
    if record.address is None:
        name = policy.decide_name(record.host)
        if not name.allowed:
            return name
    return policy.decide(record.request())


def replay(policy: CompiledPolicy, records: Iterable[Recorded]) -> Replay:
    """Judge every record with `policy` and group what changes."""
    result = Replay(policy.name, policy.version)
    for record in records:
        result.replayed += 1
        decision = judge(policy, record)
        allowed = decision.verdict == Verdict.ALLOW
        if allowed == record.passed:
            result.unchanged += 1
            continue
        groups = result.newly_allowed if allowed else result.newly_denied
        key = (record.host, record.rule, decision.rule, str(decision.reason))
        group = groups.get(key)
        if group is None:
            group = groups[key] = Group(record.host, record.rule, decision.rule,
                                        str(decision.reason))
        group.add(record)
    return result


def report_lines(result: Replay) -> list[str]:
    """The human form: a summary line, then each group."""
    lines = [f"replayed {result.replayed} recorded request(s) against "
             f"{result.policy}@{result.version}: {result.denied_count} newly denied, "
             f"{result.allowed_count} newly allowed, {result.unchanged} unchanged"]
    for title, groups in (("newly denied", result.newly_denied),
                          ("newly allowed", result.newly_allowed)):
        if groups:
            lines.append(f"{title}:")
        for g in _ordered(groups):
            was = f"was {g.recorded_rule}" if g.recorded_rule else "was no rule"
            lines.append(f"  {g.count:>5}  {g.host}  rule={g.rule or '-'}  reason={g.reason}"
                         f"  ({was})")
            lines.extend(f"         {sample}" for sample in g.samples)
    return lines
