"""Per-sandbox resource limits with the kernel's cgroups (v1 controllers or the v2 unified
hierarchy, whichever the host mounts).

runsc runs with --ignore-cgroups here, so gVisor enforces no limit of its own; the runtime
starts runsc (or QEMU) inside a cgroup of ours, and every process it starts (sentry, gofer,
ptrace stubs) inherits it. The limits cover the whole sandbox, so each one gets
an allowance for gVisor's own threads and memory on top of what the caller asked for.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from sandbox_net.errors import RuntimeFailure

ROOT = Path("/sys/fs/cgroup")
GROUP = "sandgate"
# gVisor's sentry and gofer threads: they grow with the guest's running threads and blocking
# calls (335 host tasks measured with 12 parallel curls under load; 352 crashed a sandbox)
TASK_ALLOWANCE = 256
MEMORY_ALLOWANCE_MB = 192      # the sentry's own memory
PERIOD_US = 100_000


@dataclass(frozen=True, slots=True)
class Limits:
    memory_mb: int
    cpus: float
    max_pids: int


def unified() -> bool:
    return (ROOT / "cgroup.controllers").exists()


def _dirs(name: str) -> list[Path]:
    if unified():
        return [ROOT / GROUP / name]
    return [ROOT / controller / GROUP / name for controller in ("memory", "pids", "cpu")
            if (ROOT / controller).is_dir()]


def _write(path: Path, value: str) -> None:
    try:
        path.write_text(value)
    except OSError as e:
        raise RuntimeFailure(f"cannot set {path}: {e.strerror}") from None


def create(name: str, limits: Limits) -> None:
    """Create the cgroup(s) of sandbox `name` with its limits."""
    memory = (limits.memory_mb + MEMORY_ALLOWANCE_MB) * 1024 * 1024
    tasks = limits.max_pids + TASK_ALLOWANCE
    quota = max(int(limits.cpus * PERIOD_US), 1000)
    if unified():
        parent = ROOT / GROUP
        parent.mkdir(exist_ok=True)
        with contextlib.suppress(OSError):
            (parent / "cgroup.subtree_control").write_text("+memory +pids +cpu")
        group = parent / name
        group.mkdir(exist_ok=True)
        _write(group / "memory.max", str(memory))
        if (group / "memory.swap.max").exists():
            _write(group / "memory.swap.max", "0")
        _write(group / "pids.max", str(tasks))
        _write(group / "cpu.max", f"{quota} {PERIOD_US}")
        return
    for group in _dirs(name):
        group.mkdir(parents=True, exist_ok=True)
        controller = group.parent.parent.name
        if controller == "memory":
            _write(group / "memory.limit_in_bytes", str(memory))
        elif controller == "pids":
            _write(group / "pids.max", str(tasks))
        elif controller == "cpu":
            _write(group / "cpu.cfs_period_us", str(PERIOD_US))
            _write(group / "cpu.cfs_quota_us", str(quota))


def launched_in(name: str, argv: list[str]) -> list[str]:
    """`argv` started inside the sandbox's cgroup(s): a shell writes its own pid into each
    cgroup.procs, then execs it, so it and everything it starts (runsc's sentry and gofer,
    QEMU) are limited from their first instruction. The pid is the command's own (sh, nsenter
    and the program exec one another)."""
    procs = " ".join(shlex.quote(str(group / "cgroup.procs")) for group in _dirs(name))
    script = f'echo $$ | tee {procs} >/dev/null || exit 125; exec "$@"'
    return ["sh", "-c", script, "sh", *argv]


def tasks(name: str) -> list[int]:
    pids: set[int] = set()
    for group in _dirs(name):
        with contextlib.suppress(OSError):
            pids |= {int(p) for p in (group / "cgroup.procs").read_text().split()}
    return sorted(pids)


def destroy(name: str, timeout: float = 10.0) -> None:
    """Kill whatever is still in the cgroup(s), then remove them. Idempotent."""
    deadline = time.monotonic() + timeout
    while (left := tasks(name)) and time.monotonic() < deadline:
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.01)
    for group in _dirs(name):
        with contextlib.suppress(FileNotFoundError):
            for _ in range(100):
                try:
                    group.rmdir()
                    break
                except OSError:  # the kernel is still releasing the last task
                    time.sleep(0.01)


def existing(prefix: str) -> set[str]:
    """Names of this installation's sandbox cgroups (for start-up clean-up)."""
    names: set[str] = set()
    for base in ([ROOT / GROUP] if unified() else
                 [ROOT / c / GROUP for c in ("memory", "pids", "cpu")]):
        if base.is_dir():
            names |= {p.name for p in base.iterdir() if p.is_dir()
                      and p.name.startswith(f"{prefix}-")}
    return names
