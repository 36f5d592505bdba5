"""Per-run name prefixes held by a lock, so a run can tell its own leftovers from those of a
run that died (killed CI job, restored machine snapshot) and sweep only the latter.

A prefix is leased by holding an exclusive flock on /run/sandgate-tests/<prefix>.lock for the
life of the process; the kernel drops the lock when the process dies, however it dies."""

from __future__ import annotations

import atexit
import fcntl
import os
import re
import secrets
import string
import subprocess
from collections.abc import Callable
from pathlib import Path

LEASES = Path("/run/sandgate-tests")
PREFIX = re.compile(r"^(t[a-z0-9]{3})(?:-|$)")
_held: dict[str, int] = {}


def _try_lock(prefix: str) -> int | None:
    LEASES.mkdir(parents=True, exist_ok=True)
    fd = os.open(LEASES / f"{prefix}.lock", os.O_CREAT | os.O_RDWR, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def lease_prefix() -> str:
    """A fresh prefix ('t' and three random characters: names stay <= 15 bytes), held until
    this process exits."""
    alphabet = string.ascii_lowercase + string.digits
    while True:
        prefix = "t" + "".join(secrets.choice(alphabet) for _ in range(3))
        if prefix in _held:
            continue
        fd = _try_lock(prefix)
        if fd is not None:
            _held[prefix] = fd
            return prefix


@atexit.register
def _release_all() -> None:
    """A run that ends normally removes its lock files (a killed one leaves them to the
    next sweep)."""
    for prefix, fd in list(_held.items()):
        (LEASES / f"{prefix}.lock").unlink(missing_ok=True)
        os.close(fd)
        del _held[prefix]


def prefixes_in_use_on_host() -> set[str]:
    """Test prefixes named by a network namespace or an nftables table on this host."""
    names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split()
    tables = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout
    names += [t.split()[-1].removeprefix("sandgate_") for t in tables.splitlines()
              if t.split()[-1].startswith("sandgate_")]
    return {m.group(1) for name in names if (m := PREFIX.match(name))}


def sweep_dead_runs(clean: Callable[[str], None]) -> list[str]:
    """Clean every test prefix on the host whose lease no live process holds, and drop the
    lock files of dead runs."""
    swept = []
    on_disk = {p.stem for p in LEASES.glob("*.lock")} if LEASES.is_dir() else set()
    in_use = prefixes_in_use_on_host()
    for prefix in sorted((in_use | on_disk) - set(_held)):
        fd = _try_lock(prefix)
        if fd is None:
            continue   # a live run owns it
        try:
            if prefix in in_use:
                clean(prefix)
                swept.append(prefix)
        finally:
            (LEASES / f"{prefix}.lock").unlink(missing_ok=True)
            os.close(fd)
    return swept
