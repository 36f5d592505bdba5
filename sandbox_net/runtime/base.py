"""The narrow interface every sandbox runtime implements (gVisor, microVM, test doubles)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True, slots=True)
class FileMount:
    """A host file shown read-only at `target` inside the sandbox."""

    source: Path
    target: str


@dataclass(frozen=True, slots=True)
class SandboxSpec:
    sandbox_id: str
    netns_path: str          # the sandbox's network namespace; its only way out is the gateway
    workdir: Path            # private directory on the host for the runtime's state
    env: dict[str, str] = field(default_factory=dict)
    files: tuple[FileMount, ...] = ()
    masked_dirs: tuple[str, ...] = ()   # host directories hidden behind an empty tmpfs
    memory_mb: int = 512
    max_pids: int = 256
    cpus: float = 1.0


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
                     cwd: str) -> list[str]:
        """A host command line that runs `argv` in the sandbox with the caller's stdio."""

    @abstractmethod
    def stop(self, spec: SandboxSpec) -> None:
        """Kill every process of the sandbox and free the runtime's state. Idempotent."""


OUTPUT_LIMIT = 16 * 1024 * 1024


def run_exec(runtime: Runtime, spec: SandboxSpec, argv: list[str], *, stdin: bytes | None,
             env: dict[str, str], cwd: str, timeout: float) -> ExecResult:
    """Run `argv` in the sandbox, capturing output (each stream cut at OUTPUT_LIMIT)."""
    import subprocess

    command = runtime.exec_command(spec, argv, env=env, cwd=cwd)
    with subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE) as process:
        try:
            out, err = process.communicate(stdin or b"", timeout=timeout)
            timed_out = False
        except subprocess.TimeoutExpired:
            process.kill()
            out, err = process.communicate()
            timed_out = True
    return ExecResult(124 if timed_out else process.returncode, out[:OUTPUT_LIMIT],
                      err[:OUTPUT_LIMIT], timed_out)
