"""Loading policy files: every problem in one pass, each as FILE:LINE:COL: rule <id>: message."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from policies import yamlsource
from policies.matcher import CompiledPolicy
from policies.schema import PolicySpec

POLICY_SUFFIXES = (".yaml", ".yml")


@dataclass(frozen=True, slots=True)
class LoadError:
    file: str
    line: int
    col: int
    message: str
    rule: str | None = None

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}:{self.col}: "
        return where + (f"rule {self.rule}: " if self.rule else "") + self.message


class PolicyError(Exception):
    """A policy that cannot become active. `errors` lists every problem found."""

    def __init__(self, errors: list[LoadError]) -> None:
        super().__init__("\n".join(str(e) for e in errors))
        self.errors = errors


def version_of(text: str) -> str:
    """The policy version: a hash of the file's content."""
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def load_text(text: str, source: str) -> CompiledPolicy:
    """Parse, validate and compile one policy document; raise PolicyError listing all problems."""
    try:
        located = yamlsource.load(text)
    except yamlsource.YamlSyntaxError as e:
        raise PolicyError([LoadError(source, e.position.line, e.position.col, str(e))]) from None
    if not isinstance(located.data, dict):
        raise PolicyError([LoadError(source, 1, 1, "a policy file must be a YAML mapping "
                                     "with `version`, `name` and `rules`")])
    errors = _validation_errors(located, source) + _duplicate_rule_ids(located, source)
    if errors:
        errors.sort(key=lambda e: (e.line, e.col))
        raise PolicyError(errors)
    return CompiledPolicy(PolicySpec.model_validate(located.data), version_of(text))


def load_file(path: Path) -> CompiledPolicy:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PolicyError([LoadError(str(path), 0, 0, "no such policy file")]) from None
    except (OSError, UnicodeDecodeError) as e:
        raise PolicyError([LoadError(str(path), 0, 0, f"cannot read policy file: {e}")]) from None
    return load_text(text, str(path))


def _rule_id(data: Any, loc: tuple[Any, ...]) -> str | None:
    if len(loc) >= 2 and loc[0] == "rules" and isinstance(loc[1], int):
        rules = data.get("rules")
        if isinstance(rules, list) and loc[1] < len(rules) and isinstance(rules[loc[1]], dict):
            rule_id = rules[loc[1]].get("id")
            return str(rule_id) if rule_id is not None else f"#{loc[1] + 1}"
    return None


def _message(error: Any) -> str:
    loc = error["loc"]
    names = [str(p) for p in loc if not isinstance(p, int)]
    field = names[-1] if names else "policy"
    kind = error["type"]
    if kind == "extra_forbidden":
        return f"unknown key {loc[-1]!r}; check its spelling against docs/POLICY.md"
    if kind == "missing":
        return f"missing required key {loc[-1]!r}"
    message = str(error["msg"]).removeprefix("Value error, ")
    if kind == "literal_error" and loc == ("version",):
        return "`version` must be 1"
    return f"{field}: {message}"


def _validation_errors(located: yamlsource.Located, source: str) -> list[LoadError]:
    try:
        PolicySpec.model_validate(located.data)
    except ValidationError as e:
        errors = []
        for error in e.errors():
            loc = tuple(error["loc"])
            if error["type"] == "extra_forbidden":
                pos = located.position((*loc[:-1], "<key>", loc[-1]))
            else:
                pos = located.position(loc)
            errors.append(LoadError(source, pos.line, pos.col, _message(error),
                                    _rule_id(located.data, loc)))
        return errors
    return []


def _duplicate_rule_ids(located: yamlsource.Located, source: str) -> list[LoadError]:
    rules = located.data.get("rules")
    if not isinstance(rules, list):
        return []
    seen: dict[str, int] = {}
    errors = []
    for i, rule in enumerate(rules):
        rule_id = rule.get("id") if isinstance(rule, dict) else None
        if not isinstance(rule_id, str):
            continue
        if rule_id in seen:
            pos = located.position(("rules", i, "id"))
            errors.append(LoadError(source, pos.line, pos.col,
                                    f"duplicate rule id (first used by rule #{seen[rule_id] + 1})",
                                    rule_id))
        else:
            seen[rule_id] = i
    return errors
