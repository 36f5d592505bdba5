"""How two common kinds of upstream read a request target, for the test internet's log (a
test emulation of their documented behaviour, not the servers themselves): the security
suite checks that the path the gateway's policy matched is the path every one of them would
serve.

- nginx (`merge_slashes on`, the default): decodes every percent-encoding in the path, `%2F`
  included, merges repeated slashes, resolves `.` and `..`.
- A Java servlet container (Tomcat, and Spring on it): removes `;` path parameters from each
  segment (so `..;` is `..`), decodes percent-encoding, refuses an encoded `/` or `\\` (400),
  merges repeated slashes, resolves `.` and `..`.
"""

from __future__ import annotations

import posixpath
import re
import urllib.parse

_SLASHES = re.compile("/{2,}")


def _resolve(path: str) -> str:
    resolved = posixpath.normpath(_SLASHES.sub("/", path))
    resolved = "/" + resolved.lstrip("/")          # normpath keeps a leading '//'
    return resolved + ("/" if path.endswith("/") and resolved != "/" else "")


def nginx_view(target: str) -> str | None:
    path = target.split("?", 1)[0]
    if not path.startswith("/"):
        return None
    return _resolve(urllib.parse.unquote(path, errors="strict"))


def java_view(target: str) -> str | None:
    path = target.split("?", 1)[0]
    if not path.startswith("/"):
        return None
    path = "/".join(segment.split(";", 1)[0] for segment in path.split("/"))
    if re.search("%(2[fF]|5[cC])", path):
        return None                                  # Tomcat answers 400
    return _resolve(urllib.parse.unquote(path, errors="strict"))


def views(target: str) -> dict[str, str | None]:
    try:
        return {"nginx": nginx_view(target), "java": java_view(target)}
    except UnicodeDecodeError:
        return {"nginx": None, "java": None}
