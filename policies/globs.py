"""Reasoning about globs without a request at hand: a value two globs both match (a witness
that two rules overlap), and whether one path glob matches everything another does.

Value globs are fnmatch's (`*`, `?`, `[set]`, `[!set]`), as in `query` and `headers`; path
globs are policies.paths' (`*` within a segment, `**` whole segments).
"""

from __future__ import annotations

import string
from functools import lru_cache

# A token: a literal character, a set of characters (`?` is every printable one), or STAR.
type CharSet = frozenset[str]
type Token = str | CharSet | None
STAR: Token = None
_PRINTABLE: CharSet = frozenset(string.ascii_letters + string.digits + "-._~")
_FILLER = "x"


@lru_cache(maxsize=4096)
def _tokens(glob: str, fnmatch: bool = True) -> tuple[Token, ...]:
    """A glob as tokens; in a path glob (`fnmatch` false) only `*` is special."""
    out: list[Token] = []
    i = 0
    while i < len(glob):
        c = glob[i]
        if c == "*":
            if not out or out[-1] is not STAR:
                out.append(STAR)
        elif c == "?" and fnmatch:
            out.append(_PRINTABLE)
        elif c == "[" and fnmatch and (end := glob.find("]", i + 2)) != -1:
            out.append(_char_set(glob[i + 1:end]))
            i = end
        else:
            out.append(c)
        i += 1
    return tuple(out)


def _char_set(body: str) -> CharSet:
    negate = body.startswith("!")
    if negate:
        body = body[1:]
    chars: set[str] = set()
    i = 0
    while i < len(body):
        if i + 2 < len(body) and body[i + 1] == "-":
            chars.update(chr(c) for c in range(ord(body[i]), ord(body[i + 2]) + 1))
            i += 3
        else:
            chars.add(body[i])
            i += 1
    return _PRINTABLE - chars if negate else frozenset(chars)


def _one(token: Token) -> CharSet:
    if token is None:
        raise ValueError("a star is not one character")
    return frozenset(token) if isinstance(token, str) else token


def _pick(chars: CharSet) -> str | None:
    if not chars:
        return None
    return _FILLER if _FILLER in chars else min(chars)


@lru_cache(maxsize=4096)
def common_value(a: str, b: str) -> str | None:
    """A string both fnmatch globs match, or None when there is none."""
    return _common(_tokens(a), _tokens(b))


def _common(a: tuple[Token, ...], b: tuple[Token, ...]) -> str | None:
    memo: dict[tuple[int, int], str | None] = {}

    def walk(i: int, j: int) -> str | None:  # every step moves i or j on: no cycles
        if (i, j) in memo:
            return memo[(i, j)]
        result: str | None = None
        if i == len(a) and j == len(b):
            result = ""
        elif i < len(a) and a[i] is STAR:
            result = walk(i + 1, j)
            if result is None and j < len(b):
                result = _consume(b[j], walk(i, j + 1))
        elif j < len(b) and b[j] is STAR:
            result = walk(i, j + 1)
            if result is None and i < len(a):
                result = _consume(a[i], walk(i + 1, j))
        elif i < len(a) and j < len(b):
            char = _pick(_one(a[i]) & _one(b[j]))
            rest = walk(i + 1, j + 1) if char is not None else None
            result = None if rest is None else char + rest  # type: ignore[operator]
        memo[(i, j)] = result
        return result

    return walk(0, 0)


def _consume(token: Token, rest: str | None) -> str | None:
    """One character for `token` (a star matches nothing here), then `rest`."""
    if rest is None:
        return None
    if token is STAR:
        return rest
    char = _pick(_one(token))
    return None if char is None else char + rest


def common_path(a: str, b: str) -> str | None:
    """A normalised request path both path globs match, or None when there is none."""
    segments = _common_segments(tuple(a.split("/")[1:]), tuple(b.split("/")[1:]))
    return None if segments is None else "/" + "/".join(segments)


def _common_segments(a: tuple[str, ...], b: tuple[str, ...]) -> list[str] | None:
    memo: dict[tuple[int, int], list[str] | None] = {}

    def walk(i: int, j: int) -> list[str] | None:
        if (i, j) in memo:
            return memo[(i, j)]
        result: list[str] | None = None
        if i == len(a) and j == len(b):
            result = []
        elif i < len(a) and a[i] == "**":
            result = walk(i + 1, j)
            if result is None and j < len(b):
                result = _segment_then(b[j], walk(i, j + 1))
        elif j < len(b) and b[j] == "**":
            result = walk(i, j + 1)
            if result is None and i < len(a):
                result = _segment_then(a[i], walk(i + 1, j))
        elif i < len(a) and j < len(b):
            segment = _common(_tokens(a[i], False), _tokens(b[j], False))
            rest = walk(i + 1, j + 1) if _usable(segment) else None
            result = None if rest is None else [segment, *rest]  # type: ignore[list-item]
        memo[(i, j)] = result
        return result

    return walk(0, 0)


def _usable(segment: str | None) -> bool:
    """A segment normalisation leaves alone (dot segments would be resolved away)."""
    return segment is not None and segment not in (".", "..") and "/" not in segment


def _segment_then(glob: str, rest: list[str] | None) -> list[str] | None:
    if rest is None:
        return None
    if glob == "**":
        return rest
    segment = glob.replace("*", _FILLER)
    return [segment, *rest] if _usable(segment) else None


def path_covers(outer: str, inner: str) -> bool:
    """Does path glob `outer` match every path `inner` matches? True only when that is
    certain (same glob, `/**`, or a literal prefix followed by `/**`)."""
    if outer in (inner, "/**"):
        return True
    if not outer.endswith("/**"):
        return False
    prefix = outer[:-3]
    if "*" in prefix:
        return False
    return inner == prefix or inner.startswith(prefix + "/")


def value_covers(outer: str, inner: str) -> bool:
    """Does fnmatch glob `outer` match every value `inner` matches? (certain cases only)"""
    return outer in (inner, "*")
