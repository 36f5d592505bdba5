"""gVisor (`runsc`) runtime.

Debian's runsc cannot build its own network stack here ("cannot run with network enabled in
root network namespace"), so every runsc command runs *inside* the sandbox's namespace with
`--network=host`: gVisor's netstack then passes through to that namespace and nothing else.
The control socket of a runsc sandbox is an abstract unix socket, which is per network
namespace, so `exec`, `kill` and `delete` must run in the namespace too.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from sandbox_net import cgroups
from sandbox_net.errors import RuntimeFailure
from sandbox_net.runtime.base import WORKSPACE, Runtime, SandboxSpec

CAPABILITIES = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]


def _process(spec: SandboxSpec, argv: list[str], env: dict[str, str],
             cwd: str) -> dict[str, Any]:
    return {
        "user": {"uid": spec.uid, "gid": spec.gid},
        "args": argv,
        "env": [f"{k}={v}" for k, v in env.items()],
        "cwd": cwd,
        "noNewPrivileges": True,
        "capabilities": {key: CAPABILITIES for key in
                         ("bounding", "effective", "inheritable", "permitted")},
        "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 4096, "soft": 4096}],
    }


def _tmpfs(destination: str, *options: str) -> dict[str, Any]:
    return {"destination": destination, "type": "tmpfs", "source": "tmpfs",
            "options": ["nosuid", "nodev", *options]}


def bundle_config(spec: SandboxSpec) -> dict[str, Any]:
    """OCI config: the image's tree as a read-only root; size-limited tmpfs /tmp and
    /workspace (owned by the sandbox's user); the given files bound read-only. Nothing of the
    host's own filesystem.

    No user namespace: with this runsc a user namespace needs a mapping that contains host
    uid 0 (an unmapped root cannot set the sandbox up), so it would change nothing. The
    sandbox's processes run as an unprivileged user inside gVisor, whose own kernel stands
    between them and the host's."""
    size = f"size={spec.disk_mb}m"
    mounts: list[dict[str, Any]] = [
        {"destination": "/proc", "type": "proc", "source": "proc"},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs"},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs",
         "options": ["nosuid", "noexec", "nodev", "ro"]},
        _tmpfs("/tmp", "mode=1777", size),
        _tmpfs(WORKSPACE, "mode=0755", f"uid={spec.uid}", f"gid={spec.gid}", size),
    ]
    mounts += [
        {"destination": f.target, "type": "bind", "source": str(f.source),
         "options": ["rbind", "ro"]}
        for f in spec.files
    ]
    return {
        "ociVersion": "1.0.0",
        # `sleep` from the image keeps the sandbox up; every command is a `runsc exec`
        "process": _process(spec, ["sleep", "infinity"], spec.env, "/"),
        "root": {"path": str(spec.image().rootfs), "readonly": True},
        "hostname": "sandbox",
        "mounts": mounts,
        "linux": {
            # No "network" entry: the sandbox must use the namespace runsc runs in (ours);
            # with one, gVisor's host network sees no routes.
            "namespaces": [{"type": t} for t in ("pid", "ipc", "uts", "mount")],
        },
    }


class GVisorRuntime(Runtime):
    name = "gvisor"

    def __init__(self, state_dir: Path, *, platform: str = "ptrace") -> None:
        self.state_dir = state_dir
        self.platform = platform

    def _runsc(self) -> str:
        binary = shutil.which("runsc")
        if binary is None:
            raise RuntimeFailure("runsc not found; install gVisor (apt-get install runsc)")
        return binary

    def preflight(self) -> None:
        self._runsc()
        if shutil.which("nsenter") is None:
            raise RuntimeFailure("nsenter not found; install util-linux")

    def _base(self, spec: SandboxSpec) -> list[str]:
        return ["nsenter", f"--net={spec.netns_path}", self._runsc(),
                f"--root={self.state_dir}", "--network=host", "--ignore-cgroups",
                f"--platform={self.platform}"]

    def _bundle(self, spec: SandboxSpec) -> Path:
        return spec.workdir / "bundle"

    def start(self, spec: SandboxSpec) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        bundle = self._bundle(spec)
        bundle.mkdir(parents=True, exist_ok=True, mode=0o700)
        cgroups.create(_cgroup(spec), cgroups.Limits(spec.memory_mb, spec.cpus, spec.max_pids))
        (bundle / "config.json").write_text(json.dumps(bundle_config(spec), indent=1))
        # The sandbox inherits runsc's stdout and stderr and keeps them open: give it a file,
        # not a pipe, or waiting for runsc would wait for the sandbox to end. A session of its
        # own: the gofer would otherwise stay in the gateway's process group, and a Ctrl-C
        # meant for the gateway would reach it (sandboxes outlive the gateway).
        log_path = spec.workdir / "runsc.log"
        with open(log_path, "ab") as log:
            try:
                result = subprocess.run(
                    cgroups.launched_in(_cgroup(spec), [
                        *self._base(spec), "run", "--detach", f"--bundle={bundle}",
                        spec.sandbox_id]),
                    stdin=subprocess.DEVNULL, stdout=log, stderr=log, timeout=60, check=False,
                    start_new_session=True)
            except subprocess.TimeoutExpired:
                raise RuntimeFailure(f"runsc did not start sandbox {spec.sandbox_id} "
                                     "within 60 s") from None
        if result.returncode != 0:
            tail = log_path.read_text(errors="replace").strip().splitlines()[-1:]
            raise RuntimeFailure(f"runsc could not start sandbox {spec.sandbox_id}: "
                                 + (tail[0] if tail else f"exit status {result.returncode}"))

    def exec_command(self, spec: SandboxSpec, argv: list[str], *, env: dict[str, str],
                     cwd: str | None) -> list[str]:
        process_file = spec.workdir / f"exec-{os.getpid()}-{time.monotonic_ns()}.json"
        process_file.write_text(json.dumps(_process(spec, argv, {**spec.env, **env},
                                                    cwd or spec.cwd)))
        return [*self._base(spec), "exec", f"--process={process_file}", spec.sandbox_id]

    def stop(self, spec: SandboxSpec) -> None:
        """SIGKILL the sandbox and its gofer, wait for them, drop runsc's state files.

        Not `runsc delete --force`: it polls for the sandbox to exit and takes over a second.
        Every process a gVisor sandbox runs lives inside those two (the sentry and the ptrace
        stubs it traces die with it), and with --ignore-cgroups runsc keeps no other state."""
        pids = [p for p in self._sandbox_pids(spec) if _is_runsc_of(p, spec.sandbox_id)]
        if not pids and Path(spec.netns_path).exists() and self._has_state(spec):
            subprocess.run([*self._base(spec), "delete", "--force", spec.sandbox_id],
                           capture_output=True, timeout=30, check=False,
                           stdin=subprocess.DEVNULL)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        _wait_gone(pids, spec.sandbox_id)
        cgroups.destroy(_cgroup(spec))
        self._forget(spec)

    def alive(self, spec: SandboxSpec) -> str | None:
        """Its sandbox and gofer processes live and `runsc state` says running."""
        pids = self._sandbox_pids(spec)
        if not pids:
            return "its runsc container is gone (no runsc state)"
        gone = [p for p in pids if not _is_runsc_of(p, spec.sandbox_id)]
        if gone:
            return f"its runsc processes {gone} are gone"
        try:
            result = subprocess.run([*self._base(spec), "state", spec.sandbox_id],
                                    capture_output=True, text=True, timeout=30, check=False,
                                    stdin=subprocess.DEVNULL)
            status = json.loads(result.stdout).get("status") if result.returncode == 0 else None
        except (subprocess.TimeoutExpired, ValueError, AttributeError):
            status = None
        if status != "running":
            return f"runsc state says {status or 'nothing'} for it"
        return None

    def holder(self, spec: SandboxSpec) -> int | None:
        return next((p for p in self._sandbox_pids(spec) if _is_runsc_of(p, spec.sandbox_id)),
                    None)

    def _has_state(self, spec: SandboxSpec) -> bool:
        return any(self.state_dir.glob(f"{spec.sandbox_id}_sandbox:*"))

    def _sandbox_pids(self, spec: SandboxSpec) -> list[int]:
        pids = []
        for path in self.state_dir.glob(f"{spec.sandbox_id}_sandbox:*.state"):
            with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
                state = json.loads(path.read_text())
                pids += [int(state["sandbox"]["pid"]), int(state["goferPid"])]
        return [p for p in pids if p > 1]

    def _forget(self, spec: SandboxSpec) -> None:
        """Drop runsc's state files for a sandbox whose namespace is already gone."""
        for path in self.state_dir.glob(f"{spec.sandbox_id}*"):
            with contextlib.suppress(OSError):
                path.unlink()
        shutil.rmtree(self._bundle(spec), ignore_errors=True)


def _cgroup(spec: SandboxSpec) -> str:
    return Path(spec.netns_path).name  # the namespace name: unique, and carries the prefix


def _is_runsc_of(pid: int, sandbox_id: str) -> bool:
    """Guard against a recycled pid: only kill a runsc process that names this sandbox."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return bool(cmdline) and b"runsc" in cmdline[0] and any(
        sandbox_id.encode() in part for part in cmdline)


def _wait_gone(pids: list[int], sandbox_id: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while any(_is_runsc_of(p, sandbox_id) for p in pids):
        if time.monotonic() > deadline:
            raise RuntimeFailure(f"sandbox {sandbox_id} processes {pids} did not exit")
        time.sleep(0.005)
