"""Host names and host patterns: normalisation, validation, and an index for lookups.

Pattern forms (after normalisation):

- ``example.com``    exactly that name
- ``*.example.com``  any name below example.com, not example.com itself
- ``.example.com``   example.com and any name below it
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

import idna


class HostError(ValueError):
    """A host name or pattern that cannot be used; the message says what to write instead."""


# An ASCII name whose every label is letters, digits and inner hyphens (and no `xn--` or
# other `??--` label, which IDNA must check) is its own IDNA form once lower-cased.
_PLAIN_NAME = re.compile(r"(?:(?![a-z0-9]{2}--)[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)*"
                         r"(?![a-z0-9]{2}--)[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")


@functools.lru_cache(maxsize=8192)   # the same few names arrive with every request
def normalise_name(name: str) -> str:
    """Lower-case, drop one trailing dot, IDNA-encode. Raises HostError when not a DNS name."""
    text = name.strip()
    if text.endswith("."):
        text = text[:-1]
    if not text:
        raise HostError("empty host name")
    lowered = text.lower()
    if lowered.isascii() and len(lowered) <= 253 and _PLAIN_NAME.fullmatch(lowered):
        return lowered
    if any(c.isspace() for c in text):
        raise HostError(f"host name {name!r} contains white space")
    try:
        ascii_name = idna.encode(text, uts46=True).decode("ascii")
    except idna.IDNAError as e:
        raise HostError(f"{name!r} is not a valid host name ({e})") from None
    return ascii_name.lower()


def _is_ip(text: str) -> bool:
    if ":" not in text and not text[-1:].isdigit():
        return False  # an IPv4 address or CIDR ends in a digit; IPv6 has colons
    try:
        ipaddress.ip_network(text, strict=False)
    except ValueError:
        return False
    return True


@dataclass(frozen=True, slots=True)
class HostPattern:
    suffix: str            # normalised name or suffix, without wildcard marks
    subdomains: bool       # names below `suffix` match
    apex: bool             # `suffix` itself matches

    def __str__(self) -> str:
        if self.subdomains and self.apex:
            return "." + self.suffix
        if self.subdomains:
            return "*." + self.suffix
        return self.suffix

    def matches(self, name: str) -> bool:
        if name == self.suffix:
            return self.apex
        return self.subdomains and name.endswith("." + self.suffix)


@functools.lru_cache(maxsize=65536)  # the schema and the compiler parse each entry
def parse_pattern(text: str) -> HostPattern:
    """Parse one entry of a rule's `hosts` list."""
    raw = text.strip()
    if raw in ("", "."):
        raise HostError("empty host; write a name such as example.com")
    if raw in ("*", "*.", "**", ".*"):
        raise HostError(
            f"{raw!r} would match every host; list the names you need "
            "(for example *.example.com for any subdomain of example.com)"
        )
    if _is_ip(raw.strip("[]")):
        raise HostError(f"{raw!r} is an address; put addresses and CIDRs under `addresses`")
    subdomains = apex = False
    body = raw
    if raw.startswith("*."):
        subdomains, body = True, raw[2:]
    elif raw.startswith("**."):
        raise HostError(f"{raw!r}: write .{raw[3:]} for {raw[3:]} and all its subdomains")
    elif raw.startswith("."):
        subdomains = apex = True
        body = raw[1:]
    else:
        apex = True
    if "*" in body:
        raise HostError(
            f"{raw!r}: a wildcard may only be a whole leading label, as in *.example.com"
        )
    suffix = normalise_name(body)
    if subdomains and "." not in suffix:
        raise HostError(
            f"{raw!r} would match every name under the top-level domain {suffix!r}; "
            f"name the domain, for example *.example.{suffix}"
        )
    return HostPattern(suffix, subdomains, apex)


@dataclass
class _Node[T]:
    children: dict[str, _Node[T]] = field(default_factory=dict)
    below: list[T] = field(default_factory=list)     # *.suffix and .suffix entries
    at: list[T] = field(default_factory=list)        # .suffix entries (apex)


class HostIndex[T]:
    """Items keyed by host pattern. Lookup costs O(labels of the name), whatever the size.

    Exact names sit in a dict; wildcard suffixes in a trie of reversed labels.
    """

    def __init__(self) -> None:
        self._exact: dict[str, list[T]] = {}
        self._root: _Node[T] = _Node()

    def add(self, pattern: HostPattern, item: T) -> None:
        if not pattern.subdomains:
            self._exact.setdefault(pattern.suffix, []).append(item)
            return
        node = self._root
        for label in reversed(pattern.suffix.split(".")):
            node = node.children.setdefault(label, _Node())
        node.below.append(item)
        if pattern.apex:
            node.at.append(item)

    def lookup(self, name: str) -> list[T]:
        found = list(self._exact.get(name, ()))
        labels = name.split(".")
        node = self._root
        for depth, label in enumerate(reversed(labels), start=1):
            child = node.children.get(label)
            if child is None:
                break
            node = child
            found.extend(node.below if depth < len(labels) else node.at)
        return found

    def extend(self, entries: Iterable[tuple[HostPattern, T]]) -> None:
        for pattern, item in entries:
            self.add(pattern, item)
