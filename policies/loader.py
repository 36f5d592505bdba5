"""Loading policy files: every problem in one pass, each as FILE:LINE:COL: rule <id>: message.

`extends` names other policies by their `name`; they are looked up among the policy files
in the same directory as the file that extends them, then in the directories a caller adds
(the gateway adds the policies packaged with sandgate, its read-only defaults).

Files are read with the same limits wherever they come from (policies.yamlsource): a file
larger than MAX_BYTES is refused before it is read.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from policies import yamlsource
from policies.matcher import CompiledPolicy, CompiledRule
from policies.precedence import ties
from policies.schema import INJECT_FORMS, PolicySpec, RuleSpec

POLICY_SUFFIXES = (".yaml", ".yml")


@dataclass(frozen=True, slots=True)
class LoadError:
    file: str
    line: int
    col: int
    message: str
    rule: str | None = None
    warning: bool = False   # a lint finding: reported, but the policy can still load

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}:{self.col}: "
        return (where + (f"rule {self.rule}: " if self.rule else "")
                + ("warning: " if self.warning else "") + self.message)


class PolicyError(Exception):
    """A policy that cannot become active. `errors` lists every problem found."""

    def __init__(self, errors: list[LoadError]) -> None:
        super().__init__("\n".join(str(e) for e in errors))
        self.errors = errors


@dataclass
class Source:
    """One policy file, parsed and validated on its own (before `extends` is resolved)."""

    path: str
    text: str
    located: yamlsource.Located | None = None
    spec: PolicySpec | None = None
    errors: list[LoadError] = field(default_factory=list)

    def error(self, loc: tuple[str | int, ...], message: str, rule: str | None = None) -> LoadError:
        pos = self.located.position(loc) if self.located else yamlsource.Position(1, 1)
        return LoadError(self.path, pos.line, pos.col, message, rule)


def version_of(text: str) -> str:
    """A policy version: a hash of the content it was built from."""
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def parse(text: str, path: str) -> Source:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:  # e.g. a lone surrogate that came in through JSON
        return Source(path, "", errors=[LoadError(path, 1, 1, f"not valid UTF-8 text "
                                                              f"(character {e.start})")])
    source = Source(path, text)
    try:
        source.located = yamlsource.load(text)
    except yamlsource.YamlSyntaxError as e:
        source.errors.append(LoadError(path, e.position.line, e.position.col, str(e)))
        return source
    data = source.located.data
    if not isinstance(data, dict):
        source.errors.append(LoadError(path, 1, 1, "a policy file must be a YAML mapping with "
                                                   "`version`, `name` and `rules`"))
        return source
    spec, errors = _validate(source)
    source.errors = errors + _duplicate_rule_ids(source)
    source.errors.sort(key=lambda e: (e.line, e.col))
    if not source.errors:
        source.spec = spec
    return source


def read(path: Path) -> Source:
    """Parse one policy file (read within the loader's limits: yamlsource.read_file)."""
    try:
        text = yamlsource.read_file(path)
    except yamlsource.UnreadableFile as e:
        return Source(str(path), "", errors=[LoadError(str(path), 0, 0, str(e))])
    return parse(text, str(path))


type Resolver = Callable[[str], Source | list[Source] | None]


@dataclass
class _Composition:
    """What resolving `extends` gathers: rules in order, the texts the version hashes, the
    sources by policy name (to place errors), and every problem."""

    rules: list[tuple[RuleSpec, str]] = field(default_factory=list)
    versions: list[str] = field(default_factory=list)
    sources: dict[str, Source] = field(default_factory=dict)
    errors: list[LoadError] = field(default_factory=list)


def compose(source: Source, resolve: Resolver) -> CompiledPolicy:
    """Resolve `extends` and compile. Raises PolicyError with every problem found."""
    return compose_sources(source, resolve)[0]


def compose_sources(source: Source,
                    resolve: Resolver) -> tuple[CompiledPolicy, dict[str, Source]]:
    """`compose`, also returning the source of every policy it took rules from, by name."""
    found = _Composition()
    _collect(source, resolve, (), found)
    if found.errors:
        raise PolicyError(found.errors)
    assert source.spec is not None
    policy = CompiledPolicy(source.spec, version_of("\0".join(found.versions)), found.rules)
    errors = [rule_error(found.sources, t.rule, t.message) for t in ties(policy)]
    if errors:
        raise PolicyError(errors)
    return policy, found.sources


def rule_error(sources: dict[str, Source], rule: CompiledRule, message: str,
               loc: tuple[str | int, ...] = (), warning: bool = False) -> LoadError:
    """A problem with a compiled rule, placed at the rule (or `loc` within it) in the file
    it was written in."""
    source = sources[rule.origin]
    assert source.spec is not None
    index = next(i for i, r in enumerate(source.spec.rules) if r is rule.spec)
    error = source.error(("rules", index, *loc), message, rule.spec.id)
    return LoadError(error.file, error.line, error.col, error.message, error.rule, warning)


def _collect(source: Source, resolve: Resolver, stack: tuple[str, ...],
             found: _Composition) -> None:
    if source.spec is None:
        found.errors.extend(source.errors)
        found.errors.extend(_unresolved_extends(source, resolve))
        return
    spec = source.spec
    errors = found.errors
    found.sources[spec.name] = source
    found.versions.append(source.text)
    found.rules.extend((rule, spec.name) for rule in spec.rules)
    for i, target in enumerate(spec.extends):
        loc = ("extends", i)
        if target == spec.name or target in stack:
            chain = " -> ".join((*stack, spec.name, target))
            errors.append(source.error(loc, f"`extends` cycle: {chain}; remove one link"))
            continue
        if target in found.sources:
            continue  # already included through another path
        target_source = resolve(target)
        if isinstance(target_source, list):
            files = ", ".join(s.path for s in target_source)
            errors.append(source.error(loc, f"policy {target!r} is defined more than once "
                                            f"({files}); give each policy a unique name"))
        elif target_source is None:
            errors.append(source.error(loc, f"`extends`: no policy named {target!r} next to "
                                            f"this file"))
        else:
            _collect(target_source, resolve, (*stack, spec.name), found)


def _unresolved_extends(source: Source, resolve: Resolver) -> list[LoadError]:
    """`extends` targets that do not exist, reported even when the file has other errors."""
    data = source.located.data if source.located else None
    targets = data.get("extends") if isinstance(data, dict) else None
    if not isinstance(targets, list):
        return []
    return [source.error(("extends", i), f"`extends`: no policy named {target!r} next to "
                                         "this file")
            for i, target in enumerate(targets)
            if isinstance(target, str) and resolve(target) is None]


def directory_resolver(directories: Sequence[Path], exclude: str | None = None) -> Resolver:
    """Look policies up by name among the policy files of `directories` (read once,
    lazily). An earlier directory's policy hides a later one's of the same name; two of
    one name in the same directory are ambiguous."""
    by_name: dict[str, list[Source]] | None = None

    def resolve(name: str) -> Source | list[Source] | None:
        nonlocal by_name
        if by_name is None:
            by_name = _by_name(directories, exclude)
        found = by_name.get(name)
        if not found:
            return None
        return found[0] if len(found) == 1 else found

    return resolve


def _by_name(directories: Sequence[Path], exclude: str | None) -> dict[str, list[Source]]:
    found: dict[str, list[Source]] = {}
    for directory in directories:
        here: dict[str, list[Source]] = {}
        for path in policy_files(directory):
            if exclude is not None and str(path) == exclude:
                continue
            source = read(path)
            if source.spec is not None:
                here.setdefault(source.spec.name, []).append(source)
        for name, sources in here.items():
            found.setdefault(name, sources)
    return found


def policy_files(directory: Path) -> list[Path]:
    try:
        entries = list(directory.iterdir())
    except OSError:  # missing or unreadable: callers that care check first
        return []
    return sorted(p for p in entries if p.suffix in POLICY_SUFFIXES and p.is_file())


def load_text(text: str, source: str, resolve: Resolver | None = None) -> CompiledPolicy:
    """Parse, validate and compile one policy document; raise PolicyError listing all problems."""
    return compose(parse(text, source), resolve or (lambda _name: None))


def load_file(path: Path, also: Sequence[Path] = ()) -> CompiledPolicy:
    """One policy file, `extends` looked up next to it and then in `also`."""
    source = read(path)
    return compose(source, directory_resolver([path.parent, *also], exclude=str(path)))


@dataclass
class DirectoryLoad:
    """Every policy of a directory compiled, the sources each was composed from, and every
    problem with any of them."""

    policies: dict[str, CompiledPolicy] = field(default_factory=dict)
    sources: dict[str, dict[str, Source]] = field(default_factory=dict)
    errors: list[LoadError] = field(default_factory=list)
    files: int = 0


def load_directory(directory: Path,
                   also: Sequence[Path] = ()) -> tuple[dict[str, CompiledPolicy], list[LoadError]]:
    """Every policy of a directory, and every problem with any of them."""
    loaded = load_directory_sources(directory, also)
    return loaded.policies, loaded.errors


def load_directory_sources(directory: Path, also: Sequence[Path] = ()) -> DirectoryLoad:
    """`load_directory`, keeping the sources (for `sandgate policy check`'s lint)."""
    files = policy_files(directory)
    loaded = DirectoryLoad(files=len(files))
    by_name: dict[str, list[Source]] = {}
    for source in (read(p) for p in files):
        if source.spec is None:
            loaded.errors.extend(source.errors)
        else:
            by_name.setdefault(source.spec.name, []).append(source)
    fallback = directory_resolver(also)

    def resolve(name: str) -> Source | list[Source] | None:
        found = by_name.get(name)
        if not found:
            return fallback(name)
        return found[0] if len(found) == 1 else found

    for name, group in by_name.items():
        if len(group) > 1:
            for dup in group[1:]:
                loaded.errors.append(dup.error(("name",), f"policy name {name!r} is already "
                                                          f"used by {group[0].path}"))
            continue
        try:
            loaded.policies[name], loaded.sources[name] = compose_sources(group[0], resolve)
        except PolicyError as e:
            loaded.errors.extend(err for err in e.errors if err not in loaded.errors)
    return loaded


def _rule_id(data: Any, loc: tuple[Any, ...]) -> str | None:
    if len(loc) >= 2 and loc[0] == "rules" and isinstance(loc[1], int):
        rules = data.get("rules")
        if isinstance(rules, list) and loc[1] < len(rules) and isinstance(rules[loc[1]], dict):
            rule_id = rules[loc[1]].get("id")
            return str(rule_id) if rule_id is not None else f"#{loc[1] + 1}"
    return None


def _message(error: Any) -> str:
    loc = error["loc"]
    kind = error["type"]
    names = [str(p) for p in loc if not isinstance(p, int)]
    # a problem with a rule as a whole, or with a mapping key, needs no field prefix
    whole_rule = len(loc) == 2 and loc[0] == "rules"
    prefix = "" if whole_rule or kind == "bad_key" or not names else f"{names[-1]}: "
    if kind == "extra_forbidden":
        return f"unknown key {loc[-1]!r}; check its spelling against docs/POLICY.md"
    if kind == "missing":
        return f"missing required key {loc[-1]!r}"
    if kind == "union_tag_invalid":
        return (f"unknown secret form {error['input'].get('as')!r}; use one of "
                f"{', '.join(INJECT_FORMS)}")
    if kind == "union_tag_not_found":
        return f"an inject entry needs `as: {' | '.join(INJECT_FORMS)}`"
    if kind == "literal_error" and loc == ("version",):
        return "`version` must be 1"
    message = str(error["msg"]).removeprefix("Value error, ")
    if kind == "literal_error":
        return f"{prefix}{error['input']!r}: {message}"
    return prefix + message


_INJECT_TAGS = set(INJECT_FORMS)


def _clean_loc(loc: tuple[Any, ...]) -> tuple[Any, ...]:
    """Drop pydantic's markers from an error location: the union tag that follows an inject
    index, and validator names."""
    cleaned: list[Any] = []
    for i, part in enumerate(loc):
        is_tag = (i >= 2 and loc[i - 2] == "inject" and isinstance(loc[i - 1], int)
                  and part in _INJECT_TAGS)
        if is_tag or (isinstance(part, str) and part.startswith("function-")):
            continue
        cleaned.append(part)
    return tuple(cleaned)


def _validate(source: Source) -> tuple[PolicySpec | None, list[LoadError]]:
    assert source.located is not None
    data = source.located.data
    try:
        return PolicySpec.model_validate(data), []
    except ValidationError as e:
        errors = []
        for error in e.errors():
            loc = _clean_loc(tuple(error["loc"]))
            if loc and loc[-1] == "[key]":  # a bad mapping key: point at the key itself
                loc = loc[:-1]
                error = {**error, "loc": loc, "type": "bad_key"}
                errors.append(source.error((*loc[:-1], "<key>", loc[-1]),
                                           f"{loc[-2]}: {_message(error)}",
                                           _rule_id(data, loc)))
                continue
            error = {**error, "loc": loc}
            if error["type"] == "extra_forbidden":
                key_loc = (*loc[:-1], "<key>", loc[-1])
                errors.append(source.error(key_loc, _message(error), _rule_id(data, loc)))
            else:
                errors.append(source.error(loc, _message(error), _rule_id(data, loc)))
        return None, errors


def _duplicate_rule_ids(source: Source) -> list[LoadError]:
    assert source.located is not None
    rules = source.located.data.get("rules")
    if not isinstance(rules, list):
        return []
    seen: dict[str, int] = {}
    errors = []
    for i, rule in enumerate(rules):
        rule_id = rule.get("id") if isinstance(rule, dict) else None
        if not isinstance(rule_id, str):
            continue
        if rule_id in seen:
            first = seen[rule_id] + 1
            errors.append(source.error(("rules", i, "id"),
                                       f"duplicate rule id (first used by rule #{first})", rule_id))
        else:
            seen[rule_id] = i
    return errors
