"""`sandgate policy diff`: every change between two policies that affects egress or
credentials, each classified as

- `widens`: something may now go out that could not, or with a looser budget;
- `narrows`: something that could go out no longer can, or has a tighter budget;
- `credentials`: what is injected into some request changes.

Rules are paired by (qualified) id and compared field by field: hosts, addresses, ports,
protocols, methods, paths, query, headers, mcp, inject, limits, budget; then the policy's
mode, sandbox limits and budget. Because the most specific allow rule decides, a new or
changed rule can also take requests over from another one: each rule's sample request is
decided by both versions, and a request whose deciding rule changes is reported with what it
now gets.
A change that is not certainly one way (two unrelated globs) is reported both ways.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from policies.budgets import show_period
from policies.globs import path_covers, value_covers
from policies.hosts import HostPattern
from policies.matcher import CompiledPolicy, CompiledRule
from policies.mcp import describe
from policies.precedence import sample_request
from policies.schema import Budget, McpSpec, QueryCondition

WIDENS, NARROWS, CREDENTIALS = "widens", "narrows", "credentials"


@dataclass(frozen=True, order=True, slots=True)
class Change:
    kind: str       # widens | narrows | credentials
    subject: str    # "policy" or "rule ID"
    text: str

    def __str__(self) -> str:
        return f"{self.kind:<11}  {self.subject}: {self.text}"


def diff(old: CompiledPolicy, new: CompiledPolicy) -> list[Change]:
    """Every change from `old` to `new` that affects egress or credentials."""
    changes = _policy_changes(old, new)
    before = {r.id: r for r in old.rules}
    after = {r.id: r for r in new.rules}
    for rule_id, rule in after.items():
        if rule_id not in before:
            changes += _whole_rule(rule, added=True)
    for rule_id, rule in before.items():
        if rule_id not in after:
            changes += _whole_rule(rule, added=False)
        else:
            changes += _rule_changes(rule, after[rule_id])
    changes += _takeovers(old, new)
    return list(dict.fromkeys(changes))


def _policy_changes(old: CompiledPolicy, new: CompiledPolicy) -> list[Change]:
    changes = []
    if old.spec.mode != new.spec.mode:
        kind = WIDENS if new.spec.mode == "monitor" else NARROWS
        changes.append(Change(kind, "policy", f"mode {old.spec.mode} -> {new.spec.mode}"))
    if old.spec.on_unmatched != new.spec.on_unmatched:   # a person may let more through
        kind = WIDENS if new.spec.on_unmatched == "ask" else NARROWS
        changes.append(Change(kind, "policy", f"on_unmatched {old.spec.on_unmatched} -> "
                                              f"{new.spec.on_unmatched}"))
    for name in ("connections", "request_body_bytes"):
        a, b = getattr(old.limits, name), getattr(new.limits, name)
        if a != b:
            changes.append(Change(WIDENS if b > a else NARROWS, "policy",
                                  f"limits.{name} {a} -> {b}"))
    return changes + _budget_changes("policy", old.budget, new.budget) + \
        _namespace_changes(old, new)


def _namespace_changes(old: CompiledPolicy, new: CompiledPolicy) -> list[Change]:
    """The Kubernetes namespaces whose pods may run under the policy: more widen."""
    def listed(policy: CompiledPolicy) -> set[str]:
        return set(policy.spec.kubernetes.namespaces) if policy.spec.kubernetes else set()

    before, after = listed(old), listed(new)
    changes = []
    if after - before:
        changes.append(Change(WIDENS, "policy", "pods of Kubernetes namespaces "
                                                f"{', '.join(sorted(after - before))} may use it"))
    if before - after:
        changes.append(Change(NARROWS, "policy", "pods of Kubernetes namespaces "
                                                 f"{', '.join(sorted(before - after))} may not"))
    return changes


def _whole_rule(rule: CompiledRule, added: bool) -> list[Change]:
    opens = added != rule.is_deny
    verb = "new" if added else "removed"
    where = ",".join(rule.spec.hosts or rule.spec.addresses)
    changes = [Change(WIDENS if opens else NARROWS, f"rule {rule.id}",
                      f"{verb} {rule.spec.action} rule for {where}")]
    if rule.spec.inject:
        changes.append(Change(CREDENTIALS, f"rule {rule.id}",
                              f"{verb} injection of {_inject(rule)} for {where}"))
    return changes


def _rule_changes(old: CompiledRule, new: CompiledRule) -> list[Change]:
    subject = f"rule {old.id}"
    if old.spec.action != new.spec.action:
        kind = WIDENS if new.spec.action == "allow" else NARROWS
        return [Change(kind, subject, f"action {old.spec.action} -> {new.spec.action}")]
    found: list[tuple[bool, bool, str]] = []   # (admits more, admits less, text)
    o, n = old.spec, new.spec
    found += _sets("hosts", o.host_patterns(), n.host_patterns(), _host_covers, str)
    found += _sets("addresses", old.networks, new.networks, lambda a, b: b.subnet_of(a), str)
    found += _sets("ports", sorted(old.ports), sorted(new.ports), _eq, str, empty_is_any=True)
    found += _sets("protocols", sorted(old.protocols), sorted(new.protocols), _eq, str)
    found += _sets("methods", sorted(old.methods), sorted(new.methods), _eq, str,
                   empty_is_any=True)
    found += _sets("paths", o.paths, n.paths, path_covers, str, empty_is_any=True)
    if o.paths_case_insensitive != n.paths_case_insensitive:   # any case admits more
        found.append((n.paths_case_insensitive, o.paths_case_insensitive,
                      f"paths_case_insensitive {o.paths_case_insensitive} -> "
                      f"{n.paths_case_insensitive}".lower()))
    found += _conditions("query", o.query, n.query)
    found += _conditions("headers", o.headers, n.headers)
    found += _mcp(o.mcp, n.mcp)
    changes = []
    for more, less, text in found:
        # a deny rule that admits more requests lets fewer out
        if more:
            changes.append(Change(NARROWS if old.is_deny else WIDENS, subject, text))
        if less:
            changes.append(Change(WIDENS if old.is_deny else NARROWS, subject, text))
    changes += _limit_changes(subject, old, new)
    changes += _budget_changes(subject, o.budget, n.budget)
    if tuple(o.inject) != tuple(n.inject):
        changes.append(Change(CREDENTIALS, subject,
                              f"inject {_inject(old) or 'none'} -> {_inject(new) or 'none'}"))
    return changes


def _mcp(old: McpSpec | None, new: McpSpec | None) -> list[tuple[bool, bool, str]]:
    """`mcp:` narrows what an allow rule lets through: dropping it admits any JSON-RPC,
    adding it admits less; within it, more tools or methods widen, more deny_tools or args
    narrow."""
    if old == new:
        return []
    if old is None or new is None:
        text = f"mcp {describe(old) if old else 'none'} -> {describe(new) if new else 'none'}"
        return [(new is None, old is None, text)]
    found = _sets("mcp.tools", old.tools, new.tools, value_covers, str, empty="none")
    found += [(less, more, text) for more, less, text in
              _sets("mcp.deny_tools", old.deny_tools, new.deny_tools, value_covers, str,
                    empty="none")]
    found += _sets("mcp.methods", old.methods, new.methods, value_covers, str,
                   empty="base only")
    found += _conditions("mcp.args", old.args, new.args)
    return found


def _eq(a: object, b: object) -> bool:
    return a == b


def _host_covers(outer: HostPattern, inner: HostPattern) -> bool:
    if inner.apex and not outer.matches(inner.suffix):
        return False
    return not inner.subdomains or (outer.subdomains and (
        inner.suffix == outer.suffix or inner.suffix.endswith("." + outer.suffix)))


def _sets[T](name: str, old: Iterable[T], new: Iterable[T], covers: Callable[[T, T], bool],
             show: Callable[[T], str],
             empty_is_any: bool = False, empty: str = "any") -> list[tuple[bool, bool, str]]:
    """Does `new` admit more and/or less than `old`? An empty list is `any` when
    `empty_is_any`; `empty` shows one. `covers(a, b)`: a admits all b does."""
    a, b = list(old), list(new)
    if [show(x) for x in a] == [show(x) for x in b]:
        return []
    text = f"{name} {', '.join(map(show, a)) or empty} -> {', '.join(map(show, b)) or empty}"
    if empty_is_any and (not a or not b):
        return [(not b, not a, text)]
    more = any(not any(covers(x, y) for x in a) for y in b)
    less = any(not any(covers(y, x) for y in b) for x in a)
    return [(more, less, text)] if more or less else []


def _conditions(name: str, old: dict[str, QueryCondition] | dict[str, str],
                new: dict[str, QueryCondition] | dict[str, str]) -> list[tuple[bool, bool, str]]:
    """Each condition narrows: dropping one admits more, adding one admits less."""
    found = []
    for key in sorted({*old, *new}):
        a, b = old.get(key), new.get(key)
        if a == b:
            continue
        text = f"{name} {key}: {_show(a)} -> {_show(b)}"
        if a is None or b is None:
            found.append((b is None, a is None, text))
            continue
        found.append((_looser(a, b), _looser(b, a), text))
    return found


def _looser(a: object, b: object) -> bool:
    """Does condition `b` accept something `a` does not?"""
    return not value_covers(_glob(a), _glob(b)) or any(
        _flag(a, flag) and not _flag(b, flag) for flag in ("exactly_one", "only"))


def _glob(condition: object) -> str:
    return str(getattr(condition, "match", condition))


def _flag(condition: object, name: str) -> bool:
    return bool(getattr(condition, name, False))


def _show(condition: object) -> str:
    return "none" if condition is None else str(condition)


def _limit_changes(subject: str, old: CompiledRule, new: CompiledRule,
                   prefix: str = "") -> list[Change]:
    """Budgets: no limit is the loosest; a higher one is looser."""
    changes = []
    for name in ("requests_per_minute", "bytes_per_minute"):
        a = getattr(old.spec.limits, name, None) if old.spec.limits else None
        b = getattr(new.spec.limits, name, None) if new.spec.limits else None
        if a == b:
            continue
        looser = b is None or (a is not None and b > a)
        changes.append(Change(WIDENS if looser else NARROWS, subject,
                              f"{prefix}limits.{name} {a or 'none'} -> {b or 'none'}"))
    return changes


def _budget_changes(subject: str, old: Budget | None, new: Budget | None) -> list[Change]:
    """Per field, by rate (limit over period): no budget is the loosest; a higher rate is
    looser, and at the same rate a longer period (a larger burst)."""
    changes = []
    for name in ("bytes_up", "requests"):
        a, b = _allowance(old, name), _allowance(new, name)
        if a == b:
            continue
        looser = b is None or (a is not None and (b[0] / b[1], b[1]) > (a[0] / a[1], a[1]))
        changes.append(Change(WIDENS if looser else NARROWS, subject,
                              f"budget.{name} {_per(a)} -> {_per(b)}"))
    return changes


def _allowance(budget: Budget | None, name: str) -> tuple[int, int] | None:
    limit = getattr(budget, name) if budget is not None else None
    return (limit, budget.per) if budget is not None and limit is not None else None


def _per(allowance: tuple[int, int] | None) -> str:
    return "none" if allowance is None else \
        f"{allowance[0]} per {show_period(allowance[1])}"


def _inject(rule: CompiledRule) -> str:
    return ", ".join(f"{i.secret}:{i.form}" for i in rule.spec.inject)


def _takeovers(old: CompiledPolicy, new: CompiledPolicy) -> list[Change]:
    """Requests whose deciding allow rule changes between the versions, when that changes
    their credentials, budget or MCP conditions: the precedence rules at work."""
    changes = []
    for rule in [*new.rules, *old.rules]:
        sample = sample_request(rule)
        if sample is None:
            continue
        request, text = sample
        was, now = old.decide(request), new.decide(request)
        if not (was.allowed and now.allowed) or was.rule == now.rule:
            continue
        was_rule = next(r for r in old.rules if r.id == was.rule)
        now_rule = next(r for r in new.rules if r.id == now.rule)
        if tuple(was_rule.spec.inject) != tuple(now_rule.spec.inject):
            changes.append(Change(CREDENTIALS, f"rule {now.rule}",
                                  f"now decides {text} (was rule {was.rule}): inject "
                                  f"{_inject(was_rule) or 'none'} -> "
                                  f"{_inject(now_rule) or 'none'}"))
        changes += _limit_changes(f"rule {now.rule}", was_rule, now_rule,
                                  f"now decides {text} (was rule {was.rule}): ")
        for more, less, what in _mcp(was_rule.spec.mcp, now_rule.spec.mcp):
            line = f"now decides {text} (was rule {was.rule}): {what}"
            changes += [Change(kind, f"rule {now.rule}", line)
                        for kind, on in ((WIDENS, more), (NARROWS, less)) if on]
    return changes
