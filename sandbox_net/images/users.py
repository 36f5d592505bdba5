"""Who runs a sandbox's commands: a user spec (`NAME`, `UID`, `NAME:GROUP`, `UID:GID`, as in
an OCI image's `User`) resolved against the image's own /etc/passwd and /etc/group, which
are read without following a symlink (rootfs.read_text)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from sandbox_net.errors import ImageError
from sandbox_net.images import rootfs

DEFAULT_UID = 1000   # `agent` in the built images; any image runs as it unless told otherwise
ROOT_NAMES = ("root", "0", "0:0")
_SPEC = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,31}(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,31})?$")
_ID_MAX = 2**31 - 1


@dataclass(frozen=True, slots=True)
class RunAs:
    uid: int
    gid: int

    def __str__(self) -> str:
        return f"{self.uid}:{self.gid}"


DEFAULT = RunAs(DEFAULT_UID, DEFAULT_UID)


def valid_spec(spec: str) -> bool:
    return bool(_SPEC.match(spec))


def _table(root: Path, path: str, key: str, needed: bool) -> dict[str, list[str]]:
    """name -> fields of /etc/passwd or /etc/group. A missing or symlinked file is an empty
    table unless a name has to be looked up in it (`needed`)."""
    try:
        text = rootfs.read_text(root, path)
    except ImageError:
        if needed:
            raise
        text = None
    if text is None and needed:
        raise ImageError(f"the image has no {path} to look up {key!r} in; give a number")
    rows = (line.split(":") for line in (text or "").splitlines())
    return {row[0]: row for row in rows if len(row) >= 4 and row[2].isdigit()}


def _number(text: str) -> int | None:
    if not text.isdigit():
        return None
    value = int(text)
    if value > _ID_MAX:
        raise ImageError(f"id {text} is out of range")
    return value


def resolve(root: Path, spec: str) -> RunAs:
    """The uid and gid `spec` names in the image. A numeric user absent from /etc/passwd gets
    its own number as group (never group 0 by accident)."""
    if not valid_spec(spec):
        raise ImageError(f"invalid user {spec!r}; write NAME, UID, NAME:GROUP or UID:GID")
    user, _, group = spec.partition(":")
    uid = _number(user)
    passwd = _table(root, "/etc/passwd", user, needed=uid is None)
    if uid is None:
        if user not in passwd:
            raise ImageError(f"user {user!r} is not in the image's /etc/passwd")
        uid = int(passwd[user][2])
    if not group:
        entry = passwd.get(user) if _number(user) is None else next(
            (row for row in passwd.values() if int(row[2]) == uid), None)
        return RunAs(uid, int(entry[3]) if entry and entry[3].isdigit() else uid)
    gid = _number(group)
    if gid is None:
        groups = _table(root, "/etc/group", group, needed=True)
        if group not in groups:
            raise ImageError(f"group {group!r} is not in the image's /etc/group")
        gid = int(groups[group][2])
    return RunAs(uid, gid)
