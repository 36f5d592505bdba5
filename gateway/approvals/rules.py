"""`--for policy`: the rule an approval writes into the policy, as a YAML edit that keeps the
file's comments and layout (ruamel.yaml's round trip), so the change reads as a reviewed
diff of one rule."""

from __future__ import annotations

import io
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq

from gateway.approvals.ask import Ask
from gateway.errors import BadRequest

DEFAULT_PORTS = {"http": 80, "https": 443}


def rule_for(ask: Ask, approval: int, by: str, when: str) -> dict[str, Any]:
    """An allow rule for exactly this request: its host, port, method and path. A path with
    a glob character could match more than was asked about, so it is refused."""
    if "*" in ask.path:
        raise BadRequest(f"the path {ask.path!r} holds '*', which a policy reads as a glob",
                         "allow it --for once or --for sandbox, or write the rule by hand")
    rule: dict[str, Any] = {
        "id": f"approved-{approval}",
        "description": f"approval {approval}, allowed by {by} at {when}",
        "hosts": [ask.host],
        "methods": [ask.method],
        "paths": [ask.path],
    }
    if ask.port != DEFAULT_PORTS.get(ask.scheme):
        rule["ports"] = [ask.port]
    rule["protocols"] = [ask.scheme]
    return rule


def with_rule(text: str, rule: dict[str, Any]) -> str:
    """`text` (a policy's YAML) with `rule` appended to its rules."""
    yaml = YAML()   # round trip: comments and key order stay
    yaml.indent(mapping=2, sequence=4, offset=2)
    data = yaml.load(text)
    if not isinstance(data, CommentedMap):
        raise BadRequest("the policy is not a YAML mapping", "fix it first: sandgate policy check")
    rules = data.get("rules")
    if rules is None:
        rules = data["rules"] = CommentedSeq()
    if not isinstance(rules, CommentedSeq):
        raise BadRequest("the policy's `rules` is not a list", "fix it first: sandgate policy "
                                                                "check")
    if any(isinstance(r, dict) and r.get("id") == rule["id"] for r in rules):
        raise BadRequest(f"the policy already has a rule {rule['id']}")
    entry = CommentedMap()
    for key, value in rule.items():
        entry[key] = CommentedSeq(value) if isinstance(value, list) else value
    rules.append(entry)
    out = io.StringIO()
    yaml.dump(data, out)
    return out.getvalue()
