"""Path globs (`*` one segment, `**` any number of segments), and the one meaning of a
request path they are matched against: its canonical form, which is also the form the
gateway sends upstream, so the policy and the upstream agree on what was asked for.

Canonical form of a path (docs/POLICY.md, Path semantics):
- percent-encoded unreserved characters decoded (`%61` is `a`, `%2e` is `.`), every other
  percent-encoding kept, in upper case; raw characters outside ASCII percent-encoded;
- `;` parameters removed from each segment, as Java servers do (`/admin;x=1/` is `/admin/`,
  `..;` is `..`);
- repeated slashes collapsed; `.` and `..` segments resolved (RFC 3986 5.2.4).
Refused (AmbiguousPath), because upstreams read them differently: an encoded `/`, `\\`,
NUL, or an encoded `%` starting another encoding (`%252e`: double decoding makes it `.`),
a raw backslash, percent-encoding that is not UTF-8, a path that does not start with `/`.
"""

from __future__ import annotations

import re
import string
from functools import lru_cache

from rfc3986 import normalizers

UNRESERVED = frozenset(string.ascii_letters + string.digits + "-._~")
_HEX = frozenset(string.hexdigits)
_TWICE = re.compile("%25[0-9A-Fa-f]{2}")
# decoded, these would change the path's structure or end it for some upstream
_NEVER_ENCODED = {"/": "an encoded '/'", "\\": "an encoded '\\'", "\0": "an encoded NUL"}


type PathRank = tuple[int, int, int]
NO_PATH: PathRank = (-1, 0, 0)   # a rule without `paths`: any path, the least specific


def path_rank(glob: str) -> PathRank:
    """How specific a path glob is: more whole literal segments first, then a fixed depth
    (no `**`), then more literal characters. `/repos/a/issues` > `/repos/*/issues` >
    `/repos/**` > no `paths`."""
    if glob == "/**":
        return NO_PATH   # every path: no more specific than no `paths`
    segments = glob.split("/")[1:]
    literal = sum(1 for segment in segments if "*" not in segment)
    return (literal, int("**" not in segments), sum(len(s.replace("*", "")) for s in segments))


class AmbiguousPath(ValueError):
    """A request path whose meaning depends on how the upstream decodes it."""


def parse_path_glob(glob: str) -> re.Pattern[str]:
    """Compile a path glob. Raises ValueError saying how to write it."""
    if not glob.startswith("/"):
        raise ValueError(f"path {glob!r} must start with '/'")
    if "?" in glob or "#" in glob:
        raise ValueError(f"path {glob!r}: match the query with `query`, not in the path")
    for segment in glob.split("/"):
        if "**" in segment and segment != "**":
            raise ValueError(f"path {glob!r}: '**' must be a whole segment, as in /a/**/b")
        if "***" in segment:
            raise ValueError(f"path {glob!r}: write '**' for any number of segments")
    return _compile(glob)


@lru_cache(maxsize=4096)
def _compile(glob: str, ignore_case: bool = False) -> re.Pattern[str]:
    tail = ""
    if glob.endswith("/**"):  # '/a/**': /a itself and everything below it
        glob, tail = glob[:-3], "(?:/.*)?"
    parts = []
    for segment in glob.split("/")[1:]:
        if segment == "**":  # a middle '**': any number of whole segments
            parts.append("(?:/[^/]*)*")
        else:
            parts.append("/" + "[^/]*".join(re.escape(p) for p in segment.split("*")))
    if not tail and not glob.endswith("/"):
        tail = "/?"     # `/a` matches `/a/` too: many servers route both to one handler
    return re.compile("".join(parts) + tail + r"\Z", re.IGNORECASE if ignore_case else 0)


def canonical_path(raw: str) -> str:
    """The canonical form of a request path (query and fragment dropped). Raises
    AmbiguousPath with what makes it ambiguous."""
    path = raw.split("?", 1)[0].split("#", 1)[0]
    if not path.startswith("/"):
        raise AmbiguousPath(f"path {raw!r} does not start with '/'")
    if "\\" in path:
        raise AmbiguousPath(f"path {raw!r} holds a backslash")
    segments = [_segment(s, raw) for s in path.split("/")[1:]]
    kept = [s for i, s in enumerate(segments) if s or i == len(segments) - 1]
    return normalizers.remove_dot_segments("/" + "/".join(kept)) or "/"


def _segment(segment: str, raw: str) -> str:
    """One segment, decoded where unambiguous, its `;` parameters removed."""
    out: list[str] = []
    encoded = bytearray()      # the bytes the segment's percent-encodings stand for
    i = 0
    while i < len(segment):
        char = segment[i]
        if char == ";":
            break              # a path parameter: the rest of the segment
        if char == "%":
            pair = segment[i + 1:i + 3]
            if len(pair) != 2 or not set(pair) <= _HEX:
                raise AmbiguousPath(f"path {raw!r} holds a '%' that encodes nothing")
            byte = int(pair, 16)
            encoded.append(byte)
            out.append(_decoded(byte, raw))
            i += 3
            continue
        if ord(char) > 0x7E or ord(char) < 0x21:
            raw_bytes = char.encode()
            encoded.extend(raw_bytes)
            out.append("".join(f"%{b:02X}" for b in raw_bytes))
        else:
            out.append(char)
        i += 1
    try:
        encoded.decode("utf-8")
    except UnicodeDecodeError:
        raise AmbiguousPath(f"path {raw!r}: its percent-encoding is not UTF-8") from None
    text = "".join(out)
    if _TWICE.search(text):
        # '%252e', or '%25%32%65': decoding once more (as some upstreams do) changes it
        raise AmbiguousPath(f"path {raw!r} is encoded twice")
    return text


def _decoded(byte: int, raw: str) -> str:
    char = chr(byte)
    if char in _NEVER_ENCODED:
        raise AmbiguousPath(f"path {raw!r} holds {_NEVER_ENCODED[char]}")
    return char if char in UNRESERVED else f"%{byte:02X}"


def path_matches(glob: str, path: str, ignore_case: bool = False) -> bool:
    return _compile(glob, ignore_case).match(path) is not None
