"""`sandgate policy check`: every error, and warnings about what is valid but probably not
meant (`--strict` makes them fail the check too).

Warnings: rules that never decide (a deny always overrides them, or an earlier, equally
specific rule with the same grant always does), wildcards over a public suffix (`*.co.uk`,
`*.github.io`: anyone can register a name there), addresses that are never dialable or too
broad, repeated ports, `mcp:` that lets no tool be called, and a directory holding no
policy.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from publicsuffixlist import PublicSuffixList

from policies.addresses import never_dialable
from policies.loader import (
    LoadError,
    PolicyError,
    Source,
    compose_sources,
    directory_resolver,
    load_directory_sources,
    read,
    rule_error,
)
from policies.matcher import CompiledPolicy, CompiledRule
from policies.mcp import tool_visible
from policies.precedence import never_decide, refused_streams

BROADEST_PREFIX = 16   # an address rule wider than a /16 (65,536 addresses) is "too broad"


@functools.cache
def _public_suffixes() -> PublicSuffixList:
    return PublicSuffixList()   # the list the package ships: no download


@dataclass
class Report:
    """What `check` found: policies checked, errors, warnings."""

    checked: int = 0
    errors: list[LoadError] = field(default_factory=list)
    warnings: list[LoadError] = field(default_factory=list)

    def add(self, problems: Iterable[LoadError]) -> None:
        for problem in problems:
            bucket = self.warnings if problem.warning else self.errors
            if problem not in bucket:
                bucket.append(problem)


def check(paths: Sequence[Path], also: Sequence[Path] = ()) -> Report:
    """Check policy files and directories; `extends` falls back to `also`."""
    report = Report()
    for path in paths:
        if path.is_dir():
            _check_directory(path, also, report)
        else:
            _check_file(path, also, report)
    return report


def _check_file(path: Path, also: Sequence[Path], report: Report) -> None:
    report.checked += 1
    source = read(path)
    try:
        policy, sources = compose_sources(
            source, directory_resolver([path.parent, *also], exclude=str(path)))
    except PolicyError as e:
        report.add(e.errors)
        return
    report.add(warnings(policy, sources))


def _check_directory(directory: Path, also: Sequence[Path], report: Report) -> None:
    loaded = load_directory_sources(directory, also)
    if loaded.files == 0:
        report.add([LoadError(str(directory), 0, 0, "no policy files here (*.yaml, *.yml); "
                              "check the path", warning=True)])
    report.checked += loaded.files
    report.add(loaded.errors)
    for name, policy in loaded.policies.items():
        report.add(warnings(policy, loaded.sources[name]))


def warnings(policy: CompiledPolicy, sources: dict[str, Source]) -> list[LoadError]:
    """Lint findings for every rule of a compiled policy, placed in their own files."""
    found = [rule_error(sources, f.rule, f.message, warning=True)
             for f in [*never_decide(policy), *refused_streams(policy)]]
    for rule in policy.rules:
        found += [rule_error(sources, rule, message, loc, warning=True)
                  for loc, message in rule_warnings(rule)]
    return sorted(found, key=lambda e: (e.file, e.line, e.col))


type Finding = tuple[tuple[str | int, ...], str]


def rule_warnings(rule: CompiledRule) -> list[Finding]:
    """(location within the rule, message) for each thing a rule says that is probably not
    meant."""
    return [*_public_suffix_wildcards(rule), *_addresses(rule), *_repeats(rule), *_mcp(rule)]


def _mcp(rule: CompiledRule) -> list[Finding]:
    spec = rule.spec.mcp
    if spec is None:
        return []
    if not spec.tools:
        return [(("mcp",), "mcp lists no `tools`, so no tools/call passes; list the tools the "
                           "sandbox may call (globs, \"*\" for all)")]
    if not any(tool_visible(spec, glob) for glob in spec.tools):
        return [(("mcp", "tools"), "every tool `tools` names is also in `deny_tools`, so no "
                                   "tools/call passes; remove them from one list")]
    return []


def _public_suffix_wildcards(rule: CompiledRule) -> list[Finding]:
    found: list[Finding] = []
    for i, pattern in enumerate(rule.spec.host_patterns()):
        if pattern.subdomains and _public_suffixes().is_public(pattern.suffix):
            found.append((("hosts", i), f"{pattern} matches every site under the public "
                                        f"suffix {pattern.suffix}, where anyone can register "
                                        f"a name; name the site (e.g. yours.{pattern.suffix})"))
    return found


def _addresses(rule: CompiledRule) -> list[Finding]:
    found: list[Finding] = []
    for i, network in enumerate(rule.networks):
        where = ("addresses", i)
        if label := never_dialable(network):
            found.append((where, f"{network} is never dialable ({label}): the gateway refuses "
                                 "it whatever a rule says; remove it"))
        elif network.prefixlen < BROADEST_PREFIX:
            found.append((where, f"{network} is too broad ({network.num_addresses} addresses, "
                                 f"wider than a /{BROADEST_PREFIX}); list the networks you "
                                 "need"))
    return found


def _repeats(rule: CompiledRule) -> list[Finding]:
    found: list[Finding] = []
    for key, values in (("ports", rule.spec.ports), ("hosts", rule.spec.hosts)):
        seen: set[object] = set()
        for i, value in enumerate(values):
            if value in seen:
                found.append(((key, i), f"{key[:-1]} {value} is listed twice; remove one"))
            seen.add(value)
    return found
