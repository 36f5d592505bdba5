"""A private containerd for tests of the node's half of Kubernetes: Debian's containerd with a
root, state, socket and config of its own under a temporary directory, gVisor through the
runc shim (the runsc-sandgate wrapper a node gets, the runc root private too),
and `ctr run --cni` as the CNI caller, in a mount namespace of its own where /etc/cni/net.d
and the plugin directory are the test's. Nothing is pulled from a registry: containers run
on a root filesystem given by path. `stop` removes tasks, containers and processes, also
after a failure."""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.harness import REPO, wait_for

PLUGIN_DIR = Path("/usr/lib/cni")       # where Debian's ctr looks for CNI plugins
SHIM_SOCKETS = Path("/run/containerd")  # containerd 1.6 puts its shims' sockets there
CONF_DIR = Path("/etc/cni/net.d")       # where ctr reads its conflist
NETNS_DIR = Path("/run/netns")


def _config(base: Path) -> str:
    return "\n".join([
        "version = 2",
        f'root = "{base / "root"}"',
        f'state = "{base / "state"}"',
        # the CRI and the other services a node's containerd runs are not needed here
        'disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.btrfs",'
        ' "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper",'
        ' "io.containerd.snapshotter.v1.aufs", "io.containerd.tracing.processor.v1.otlp",'
        ' "io.containerd.internal.v1.tracing"]',
        "[grpc]", f'  address = "{base / "containerd.sock"}"',
        "[ttrpc]", f'  address = "{base / "containerd.sock.ttrpc"}"',
        "[debug]", '  address = ""',
        "[metrics]", '  address = ""',
        '[plugins."io.containerd.internal.v1.opt"]', f'  path = "{base / "opt"}"',
        "",
    ])


@dataclass
class Containerd:
    base: Path
    namespace: str
    process: subprocess.Popen[bytes] | None = None
    containers: set[str] = field(default_factory=set)
    _shim_sockets: set[Path] | None = None     # those before the start, when the dir existed

    @property
    def socket(self) -> Path:
        return self.base / "containerd.sock"

    @property
    def plugins(self) -> Path:
        return self.base / "cni-bin"

    def start(self) -> None:
        if SHIM_SOCKETS.exists():
            self._shim_sockets = set(SHIM_SOCKETS.rglob("*"))
        self.base.mkdir(parents=True, exist_ok=True)
        (self.base / "config.toml").write_text(_config(self.base))
        self.plugins.mkdir(exist_ok=True)
        plugin = self.plugins / "sandgate-cni"
        # what the DaemonSet installs runs the console script; here the worktree's code
        plugin.write_text(f"#!/bin/sh\ncd {shlex.quote(str(REPO))} && exec "
                          f"{shlex.quote(sys.executable)} -m gateway.cni\n")
        plugin.chmod(0o755)
        # the wrapper install-cni puts on a node (runsc-sandgate), from the worktree's code
        wrapper = self.base / "runsc-wrapper"
        wrapper.write_text(f"#!/bin/sh\nPYTHONPATH={shlex.quote(str(REPO))} exec "
                           f"{shlex.quote(sys.executable)} -P -m gateway.runsc_sandgate "
                           '"$@"\n')
        wrapper.chmod(0o755)
        with open(self.base / "containerd.log", "ab") as log:
            self.process = subprocess.Popen(
                ["containerd", "--config", str(self.base / "config.toml")],
                stdout=log, stderr=log, start_new_session=True)
        wait_for(lambda: self.ctr("version").returncode == 0, timeout=30, interval=0.1)

    def ctr(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["ctr", "--address", str(self.socket), "--namespace",
                               self.namespace, *args], capture_output=True, text=True,
                              timeout=timeout, check=False)

    def full_id(self, container: str) -> str:
        """The CNI_CONTAINERID ctr gives a container."""
        return f"{self.namespace}-{container}"

    def netns(self, container: str) -> str:
        """The network namespace made for the container, as the CRI makes a pod's."""
        return f"{self.namespace}-{container}"

    def run(self, container: str, rootfs: Path, conflist: dict[str, Any], *cmd: str,
            detach: bool = False, mounts: dict[str, Path] | None = None,
            timeout: float = 120, net_host: bool = False) -> subprocess.CompletedProcess[str]:
        """`ctr run --cni` on gVisor with `conflist` as the node's only network
        configuration, in a network namespace made beforehand and named by path in the
        container's spec (as the CRI does for a pod; ctr alone would leave the path out).
        `mounts`: container path -> host file, read-only. `net_host`: `ctr run --net-host`
        instead, the node's network as a hostNetwork pod gets it (and no CNI)."""
        self.containers.add(container)
        if net_host:
            network = ["--net-host"]
        else:
            subprocess.run(["ip", "netns", "add", self.netns(container)], check=True,
                           capture_output=True)
            network = ["--cni", "--with-ns",
                       f"network:{NETNS_DIR / self.netns(container)}"]
        netd = self.base / "net.d" / container
        netd.mkdir(parents=True, exist_ok=True)
        (netd / "10-sandgate.conflist").write_text(json.dumps(conflist))
        flags = [*network, "--runc-binary", str(self.base / "runsc-wrapper"),
                 "--fifo-dir", str(self.base / "fifo"),
                 "--runc-root", str(self.base / "runc"), "--rootfs", "--read-only",
                 "--env", "PATH=/usr/local/bin:/usr/bin:/bin",
                 *(["--detach"] if detach else ["--rm"])]
        for target, source in (mounts or {}).items():
            flags += ["--mount", f"type=bind,src={source},dst={target},options=rbind:ro"]
        ctr = shlex.join(["ctr", "--address", str(self.socket), "--namespace", self.namespace,
                          "run", *flags, str(rootfs), container, *cmd])
        # ctr calls the plugins: give it the test's plugin and configuration directories in
        # a mount namespace of its own (the host's stay untouched; /etc/cni need not exist)
        upper, work = self.base / "etc-upper" / container, self.base / "etc-work" / container
        upper.mkdir(parents=True, exist_ok=True)
        work.mkdir(parents=True, exist_ok=True)
        script = "\n".join([
            "set -e",
            f"mount -t overlay overlay -o lowerdir=/etc,upperdir={upper},workdir={work} /etc",
            f"mkdir -p {CONF_DIR}",
            f"mount --bind {shlex.quote(str(netd))} {CONF_DIR}",
            f"mount --bind {shlex.quote(str(self.plugins))} {PLUGIN_DIR}",
            f"exec {ctr}",
        ])
        return subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                               script], capture_output=True, text=True, timeout=timeout,
                              check=False)

    def task_pid(self, container: str) -> int:
        for line in self.ctr("task", "ls").stdout.splitlines()[1:]:
            name, pid, _status = line.split()
            if name == container:
                return int(pid)
        raise AssertionError(f"no task {container}: {self.ctr('task', 'ls').stdout}")

    def exec(self, container: str, *cmd: str,
             timeout: float = 60) -> subprocess.CompletedProcess[str]:
        exec_id = f"x{time.monotonic_ns()}"
        return self.ctr("task", "exec", "--exec-id", exec_id, "--fifo-dir",
                        str(self.base / "fifo"), container, *cmd,
                        timeout=timeout)

    def remove(self, container: str) -> list[str]:
        """Kill and delete the task and the container (no CNI DEL: the caller does that).
        A `ctr run` that failed after creating its task leaves the task CREATED with its
        shim and gVisor processes: those are killed; their command lines are returned."""
        self.ctr("task", "delete", "--force", container)
        self.ctr("container", "delete", container)
        subprocess.run(["ip", "netns", "del", self.netns(container)], capture_output=True,
                       check=False)
        bundle = f"/{self.namespace}/{container}"
        return kill_matching(lambda args: str(self.base) in " ".join(args) and (
            ("-id" in args and args[args.index("-id") + 1] == container)
            or any(a.endswith(bundle) for a in args)))

    def stop(self) -> list[str]:
        """Remove every container, stop containerd, kill what is left of its shims and
        gVisor processes; return the pids that had to be killed."""
        if self.process is not None and self.process.poll() is None:
            for container in sorted(self.containers):
                self.remove(container)
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        def ours(args: list[str]) -> bool:
            return str(self.base) in " ".join(args)

        # shims of deleted tasks exit by themselves, a moment later
        with contextlib.suppress(AssertionError):
            wait_for(lambda: not kill_matching(ours, signal.SIG_DFL), timeout=10)
        killed = kill_matching(ours)
        for container in sorted(self.containers):
            subprocess.run(["ip", "netns", "del", self.netns(container)], capture_output=True,
                           check=False)
        for mounted in ("root", "state"):
            unmount_below(self.base / mounted)
        shutil.rmtree(self.base, ignore_errors=True)
        self._remove_shim_sockets()
        return killed

    def _remove_shim_sockets(self) -> None:
        """What this run left in containerd's fixed socket directory (a killed shim leaves
        its socket): all of it if the directory is this run's, else only what is new."""
        if self._shim_sockets is None:
            shutil.rmtree(SHIM_SOCKETS, ignore_errors=True)
            return
        for path in sorted(set(SHIM_SOCKETS.rglob("*")) - self._shim_sockets, reverse=True):
            with contextlib.suppress(OSError):
                if path.is_dir() and not path.is_symlink():
                    path.rmdir()
                else:
                    path.unlink()


def kill_matching(match: Callable[[list[str]], bool],
                  sig: int = signal.SIGKILL) -> list[str]:
    """Send `sig` (SIG_DFL: none, only look) to every process whose arguments `match`;
    return their command lines."""
    killed = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            args = (proc / "cmdline").read_bytes().decode(errors="replace").split("\0")
            if match(args):
                if sig != signal.SIG_DFL:
                    os.kill(int(proc.name), sig)
                killed.append(" ".join(args).strip())
        except (OSError, ProcessLookupError):
            continue
    return killed


def unmount_below(path: Path) -> None:
    """Unmount whatever containerd left mounted under `path` (deepest first)."""
    mounts = [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()]
    for target in sorted((m for m in mounts if m.startswith(f"{path}/")), reverse=True):
        subprocess.run(["umount", "-l", target], capture_output=True, check=False)
