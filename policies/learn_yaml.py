"""The text of a learned policy: YAML a reviewer reads, every rule with a comment giving its
hit count, first and last time, and example paths for each generalised glob. The rules of a
starting policy (`--from`) come first, as they were, marked as kept."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import yaml

from policies.learn import Hits, Learned, LearnedRule
from policies.schema import PolicySpec, RuleSpec

INDENT = "  "


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ") if value else "-"


class _Dumper(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:
        return True     # the policy loader refuses anchors and aliases


def _dump(data: Any, flow: bool | None = None) -> str:
    # flow style for lists of scalars: `methods: [GET, HEAD]` reads as it is written by hand
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, default_flow_style=flow,
                     width=100, allow_unicode=False)


def _indented(text: str) -> list[str]:
    return [INDENT + line for line in text.rstrip("\n").splitlines()]


def rule_data(spec: RuleSpec) -> dict[str, Any]:
    """A rule as it would be written by hand: defaults left out, `as` by its YAML name."""
    return spec.model_dump(mode="json", by_alias=True, exclude_defaults=True)


def hits_comment(hits: Hits) -> str:
    noun = "request" if hits.count == 1 else "requests"
    return f"# {hits.count} {noun}, first {_when(hits.first)}, last {_when(hits.last)}"


def _learned_rule(rule: LearnedRule) -> list[str]:
    lines = [INDENT + hits_comment(rule.hits)]
    for glob, examples in rule.examples.items():
        if examples and examples != [glob]:
            lines.append(f"{INDENT}#   {glob}: e.g. {', '.join(examples)}")
    return lines + _indented(_dump([rule_data(rule.spec)]))


def render(learned: Learned, *, name: str, description: str = "",
           base: PolicySpec | None = None, header: Sequence[str] = ()) -> str:
    """The whole policy file. `base`: the starting policy, whose settings and rules are kept;
    `header`: lines for the opening comment (what was read, when)."""
    lines = [f"# {line}" for line in header]
    top: dict[str, Any] = {"version": 1, "name": name}
    if description:
        top["description"] = description
    if base is not None:
        kept = base.model_dump(mode="json", by_alias=True, exclude_defaults=True,
                               include={"extends", "limits"})
        top.update(kept)
    lines += _dump(top, flow=False).rstrip("\n").splitlines()
    lines.append("rules:" if (learned.rules or (base and base.rules)) else "rules: []")
    if base is not None and base.rules:
        lines.append(f"{INDENT}# kept from {base.name}")
        for spec in base.rules:
            lines += _indented(_dump([rule_data(spec)]))
    if learned.rules:
        lines.append(f"{INDENT}# learned")
    for rule in learned.rules:
        lines += _learned_rule(rule)
    return "\n".join(lines) + "\n"


def summary(learned: Learned) -> str:
    """One line for stderr: what became rules, and what did not."""
    parts = [f"{len(learned.rules)} rule(s) from {learned.used} request(s)"]
    if learned.covered:
        parts.append(f"{learned.covered} already allowed")
    if learned.skipped:
        parts.append(f"{learned.skipped} denied (not learned)")
    if learned.unbound:
        parts.append(f"secrets injected by rules not found, not bound: "
                     f"{', '.join(learned.unbound)}")
    return "; ".join(parts)
