"""microVM runtime: QEMU's `microvm` machine, under KVM when it works and software emulation
(TCG) when it does not (here: nested virtualisation hangs, so TCG), in the sandbox's network
namespace.

Inside the namespace the veth's sandbox end and QEMU's tap device are joined by a bridge, and
the guest takes the sandbox address: the host's nftables rules on the veth apply to the VM
exactly as to a gVisor sandbox. Commands run through the guest agent (vm_agent.py).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from sandbox_net import cgroups, links
from sandbox_net.errors import ImageError, RuntimeFailure
from sandbox_net.images import disk
from sandbox_net.runtime import vm_agent
from sandbox_net.runtime.base import Runtime, SandboxSpec
from sandbox_net.runtime.microvm_image import build, sandbox_initrd

QEMU = "qemu-system-x86_64"
QEMU_OVERHEAD_MB = 160        # QEMU itself and TCG's translation cache (TCG_CACHE_MB)
TCG_CACHE_MB = 64
MIN_MEMORY_MB = 128
AGENT_CHECK_TIMEOUT = 20   # a guest under software emulation on a busy host answers slowly


def _timing_arguments(hz: int) -> str:
    """Under software emulation on a busy host the guest's TSC calibration against its PIT
    fails, and the kernel then hangs before init (seen here in about one boot in four with
    both cores loaded). The emulated TSC counts at the host's rate, so tell the kernel that
    rate instead of letting it measure (and skip the delay-loop calibration too)."""
    khz = _host_tsc_khz()
    if khz is None:
        return "no_timer_check"
    return f"tsc_early_khz={khz} lpj={khz * 1000 // hz} tsc=reliable no_timer_check"


def _host_tsc_khz() -> int | None:
    with contextlib.suppress(OSError, ValueError):
        return int(Path("/sys/devices/system/cpu/cpu0/tsc_freq_khz").read_text())
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("cpu MHz"):
                return int(float(line.split(":")[1]) * 1000)
    return None


def _accelerator(wanted: str) -> str:
    """KVM only when asked for and usable; TCG otherwise (KVM hangs under nested
    virtualisation on hosts like this one), with its translation cache bounded: by default
    it grows towards 1 GiB as the guest runs new code, and the sandbox's memory cgroup
    killed QEMU after ~9 minutes of a guest's shell loop (anon RSS 880 MB: guest RAM plus
    ~300 MB of translated code)."""
    if wanted == "kvm" and os.access("/dev/kvm", os.R_OK | os.W_OK):
        return "kvm"
    return f"tcg,tb-size={TCG_CACHE_MB}"


class MicroVMRuntime(Runtime):
    name = "microvm"

    def __init__(self, cache_dir: Path, *, accel: str = "tcg") -> None:
        self.cache_dir = cache_dir
        self.accel = accel

    def preflight(self) -> None:
        for tool, package in ((QEMU, "qemu-system-x86"), ("busybox", "busybox-static"),
                              ("cpio", "cpio"), ("nsenter", "util-linux"), ("ip", "iproute2")):
            if shutil.which(tool) is None:
                raise RuntimeFailure(f"{tool} not found; install {package}")

    def _socket(self, spec: SandboxSpec) -> Path:
        return spec.workdir / "agent.sock"

    def start(self, spec: SandboxSpec) -> None:
        self.preflight()
        image = build(self.cache_dir)
        root = spec.image()
        try:
            root_disk = disk.ensure(root.rootfs, root.disk, root.id)
        except ImageError as e:
            raise RuntimeFailure(f"cannot make the image's disk: {e}") from None
        spec.workdir.mkdir(parents=True, exist_ok=True, mode=0o700)
        initrd = sandbox_initrd(image.initrd, spec.files, spec.workdir / "initrd.img")
        links.bridge_for_vm(Path(spec.netns_path).name, tap="tap0")
        name = _cgroup(spec)
        cgroups.create(name, cgroups.Limits(spec.memory_mb + QEMU_OVERHEAD_MB, spec.cpus,
                                            spec.max_pids))
        memory = max(spec.memory_mb, MIN_MEMORY_MB)
        argv = [
            "nsenter", f"--net={spec.netns_path}", QEMU,
            "-M", "microvm", "-accel", _accelerator(self.accel), "-m", str(memory), "-smp", "1",
            "-nodefaults", "-no-user-config", "-nographic",
            "-kernel", str(image.kernel), "-initrd", str(initrd),
            "-append", f"console=ttyS0 quiet panic=-1 {_timing_arguments(image.hz)} "
                       f"sg.ip={spec.ip} sg.gw={spec.gateway_ip} sg.uid={spec.uid} "
                       f"sg.gid={spec.gid} sg.disk={spec.disk_mb}",
            # the image, read-only for QEMU too: nothing in the guest can write to it
            "-drive", f"id=root,file={root_disk},format=raw,if=none,readonly=on",
            "-device", "virtio-blk-device,drive=root",
            "-serial", f"file:{spec.workdir / 'console.log'}",
            "-netdev", "tap,id=net0,ifname=tap0,script=no,downscript=no",
            "-device", "virtio-net-device,netdev=net0",
            "-device", "virtio-serial-device",
            "-chardev", f"socket,id=agent,path={self._socket(spec)},server=on,wait=off",
            "-device", "virtserialport,chardev=agent,name=sandgate.agent",
            "-name", f"sandgate-{spec.sandbox_id}",
        ]
        with open(spec.workdir / "qemu.log", "ab") as log:
            process = subprocess.Popen(cgroups.launched_in(name, argv), stdin=subprocess.DEVNULL,
                                       stdout=log, stderr=log,
                                       start_new_session=True)
        (spec.workdir / "qemu.pid").write_text(str(process.pid))
        try:
            vm_agent.wait_ready(self._socket(spec), timeout=90)
        except RuntimeFailure:
            log_tail = (spec.workdir / "qemu.log").read_text(errors="replace")[-300:]
            raise RuntimeFailure(f"microVM {spec.sandbox_id} did not boot: {log_tail}") from None

    def exec_command(self, spec: SandboxSpec, argv: list[str], *, env: dict[str, str],
                     cwd: str | None) -> list[str]:
        request = spec.workdir / f"exec-{os.getpid()}-{time.monotonic_ns()}.json"
        request.write_text(json.dumps({"argv": argv, "env": {**spec.env, **env},
                                       "cwd": cwd or spec.cwd, "uid": spec.uid,
                                       "gid": spec.gid}))
        return [sys.executable, "-m", "sandbox_net.runtime.vm_agent",
                str(self._socket(spec)), str(request)]

    def stop(self, spec: SandboxSpec) -> None:
        pid = _qemu_pid(spec)
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        cgroups.destroy(_cgroup(spec))
        for leftover in ("agent.sock", "agent.sock.lock", "qemu.pid", "initrd.img"):
            with contextlib.suppress(OSError):
                (spec.workdir / leftover).unlink()


    def alive(self, spec: SandboxSpec) -> str | None:
        """Its QEMU process lives and the guest agent answers."""
        if _qemu_pid(spec) is None:
            return "its QEMU process is gone"
        try:
            vm_agent.wait_ready(self._socket(spec), timeout=AGENT_CHECK_TIMEOUT)
        except RuntimeFailure:
            return "its guest agent does not answer"
        return None

    def holder(self, spec: SandboxSpec) -> int | None:
        return _qemu_pid(spec)


def _qemu_pid(spec: SandboxSpec) -> int | None:
    """The pid of the sandbox's QEMU, when that process still runs (a recycled pid names
    another command line)."""
    with contextlib.suppress(OSError, ValueError):
        pid = int((spec.workdir / "qemu.pid").read_text())
        if spec.sandbox_id.encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
            return pid
    return None


def _cgroup(spec: SandboxSpec) -> str:
    return Path(spec.netns_path).name
