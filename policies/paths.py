"""Path globs (`*` one segment, `**` any number of segments) and the request-path
normalisation they are matched against."""

from __future__ import annotations

import re
from functools import lru_cache

# Characters whose percent-encoded form could change what a path means to an upstream that
# decodes it again: '/', '\\' create segments; '.' can form '..' segments.
_ENCODED_SEPARATORS = re.compile(r"%(2f|5c)", re.IGNORECASE)
_ENCODED_DOT = re.compile(r"%2e", re.IGNORECASE)


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
def _compile(glob: str) -> re.Pattern[str]:
    tail = ""
    if glob.endswith("/**"):  # '/a/**': /a itself and everything below it
        glob, tail = glob[:-3], "(?:/.*)?"
    parts = []
    for segment in glob.split("/")[1:]:
        if segment == "**":  # a middle '**': any number of whole segments
            parts.append("(?:/[^/]*)*")
        else:
            parts.append("/" + "[^/]*".join(re.escape(p) for p in segment.split("*")))
    return re.compile("".join(parts) + tail + r"\Z")


def normalise_path(raw: str) -> str:
    """The path a rule is matched against: query removed, '%2e' decoded, dot segments
    removed (RFC 3986 5.2.4). Encoded '/' or '\\' and raw backslashes are refused
    (AmbiguousPath): upstreams disagree on what they mean."""
    path = raw.split("?", 1)[0].split("#", 1)[0] or "/"
    if _ENCODED_SEPARATORS.search(path) or "\\" in path:
        raise AmbiguousPath(f"path {raw!r} holds an encoded separator")
    path = _ENCODED_DOT.sub(".", path)
    output: list[str] = []
    for segment in path.split("/")[1:]:
        if segment == "..":
            if output:
                output.pop()
        elif segment != ".":
            output.append(segment)
    result = "/" + "/".join(output)
    if path.endswith(("/.", "/..")) and not result.endswith("/"):
        result += "/"
    return result


def path_matches(glob: str, path: str) -> bool:
    return _compile(glob).match(path) is not None
