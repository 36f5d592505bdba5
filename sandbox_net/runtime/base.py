"""The narrow interface every sandbox runtime implements (gVisor, microVM, test doubles)."""

from __future__ import annotations

import math
import subprocess
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path

from sandbox_net.errors import RuntimeFailure


@dataclass(frozen=True, slots=True)
class FileMount:
    """A host file shown read-only at `target` inside the sandbox."""

    source: Path
    target: str


@dataclass(frozen=True, slots=True)
class RootImage:
    """The image a sandbox runs on (sandbox_net.images): its tree, read-only, for gVisor; the
    same tree as an ext4 file (built on first use) for a microVM."""

    id: str
    rootfs: Path
    disk: Path


WORKSPACE = "/workspace"


@dataclass(frozen=True, slots=True)
class SandboxSpec:
    sandbox_id: str
    netns_path: str          # the sandbox's network namespace; its only way out is the gateway
    workdir: Path            # private directory on the host for the runtime's state
    root: RootImage | None = None   # None only for stopping what a crash left
    env: dict[str, str] = field(default_factory=dict)
    files: tuple[FileMount, ...] = ()
    uid: int = 1000          # who every command runs as (root only on explicit request)
    gid: int = 1000
    cwd: str = WORKSPACE     # default working directory of commands
    disk_mb: int = 512       # size of each writable tmpfs, /tmp and /workspace
    memory_mb: int = 512
    max_pids: int = 256
    cpus: float = 1.0
    ip: str = ""             # the sandbox's address (a VM takes it on its own interface)
    gateway_ip: str = ""     # the host side of its link: default route and DNS

    def image(self) -> RootImage:
        if self.root is None:
            raise RuntimeFailure(f"sandbox {self.sandbox_id} has no image to run on")
        return self.root


@dataclass(frozen=True, slots=True)
class ExecResult:
    exit_code: int
    stdout: bytes
    stderr: bytes
    timed_out: bool = False


class Runtime(ABC):
    """Starts, enters and stops sandboxes. Implementations raise RuntimeFailure."""

    name: str

    @abstractmethod
    def preflight(self) -> None:
        """Raise RuntimeFailure with an actionable message when this runtime cannot work here."""

    @abstractmethod
    def start(self, spec: SandboxSpec) -> None:
        """Boot the sandbox inside spec.netns_path; return once it accepts exec."""

    @abstractmethod
    def exec_command(self, spec: SandboxSpec, argv: list[str], *, env: dict[str, str],
                     cwd: str | None) -> list[str]:
        """A host command line that runs `argv` in the sandbox with the caller's stdio, in
        `cwd` (default: spec.cwd), as spec.uid."""

    @abstractmethod
    def stop(self, spec: SandboxSpec) -> None:
        """Kill every process of the sandbox and free the runtime's state. Idempotent."""

    @abstractmethod
    def alive(self, spec: SandboxSpec) -> str | None:
        """None when the sandbox started earlier (by another gateway process) still runs as
        started; otherwise why not, in a few words (for the audit row of its removal)."""

    @abstractmethod
    def holder(self, spec: SandboxSpec) -> int | None:
        """A live host process of the sandbox inside its network namespace, if any."""


OUTPUT_LIMIT = 16 * 1024 * 1024


KILLED = 137  # what `timeout -s KILL` leaves


def bounded(argv: list[str], timeout: float) -> list[str]:
    """`argv` under `timeout -s KILL` inside the sandbox: killing the host-side exec client
    would leave the command running in there."""
    return ["timeout", "-s", "KILL", str(max(math.ceil(timeout), 1)), *argv]


def run_exec(runtime: Runtime, spec: SandboxSpec, argv: list[str], *, stdin: bytes | None,
             env: dict[str, str], cwd: str | None, timeout: float) -> ExecResult:
    """Run `argv` in the sandbox, capturing output (each stream cut at OUTPUT_LIMIT)."""
    command = runtime.exec_command(spec, bounded(argv, timeout), env=env, cwd=cwd)
    started = time.monotonic()
    with subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE) as process:
        try:
            out, err = process.communicate(stdin or b"", timeout=timeout + 30)
        except subprocess.TimeoutExpired:  # the sandbox did not even answer
            process.kill()
            out, err = process.communicate()
    code = process.returncode
    timed_out = code < 0 or (code == KILLED and time.monotonic() - started >= timeout - 0.5)
    return ExecResult(124 if timed_out else code, out[:OUTPUT_LIMIT], err[:OUTPUT_LIMIT],
                      timed_out)
