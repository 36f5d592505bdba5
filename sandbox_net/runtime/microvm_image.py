"""The microVM's kernel and initramfs, built from Debian packages and cached.

Kernel: Debian's `linux-image-cloud-amd64` (downloaded with apt-get download and unpacked,
nothing installed on the host). Its virtio drivers are modules, loaded by our init in
dependency order (the package ships no modules.dep). Userland of the initramfs: busybox-static,
our init, and the guest agent (a busybox shell loop on a virtio serial port: see vm_agent.py).

The sandbox itself runs on its image (sandbox_net.images), a read-only virtio block device:
init mounts it under an overlay only long enough to place the sandbox's files (resolv.conf,
hosts, the CA bundle), makes it read-only again, and mounts size-limited tmpfs on /tmp and
/workspace. The agent stays in the initramfs, out of the sandbox's sight, and enters the
image's root for each command as the sandbox's user (busybox nsenter -r -w -S -G), with no
new privileges.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from sandbox_net.errors import RuntimeFailure
from sandbox_net.runtime.base import FileMount

KERNEL_PACKAGE = "linux-image-cloud-amd64"
MODULES = ("virtio_ring", "virtio", "virtio_mmio", "failover", "net_failover", "virtio_net",
           "virtio_console", "virtio_blk", "overlay")
NEWROOT = "/newroot"

INIT = """#!/bin/busybox sh
/bin/busybox mkdir -p /proc /sys /dev /tmp /etc /run /usr/bin /usr/sbin /sbin
/bin/busybox --install -s
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tmpfs -o mode=0700 agent /tmp
for m in {modules}; do insmod /lib/modules/$m.ko; done
for arg in $(cat /proc/cmdline); do
  case $arg in
    sg.ip=*) IP=${{arg#sg.ip=}};; sg.gw=*) GW=${{arg#sg.gw=}};;
    sg.uid=*) SUID=${{arg#sg.uid=}};; sg.gid=*) SGID=${{arg#sg.gid=}};;
    sg.disk=*) DISK=${{arg#sg.disk=}};;
  esac
done
ip link set lo up
ip addr add "$IP/30" dev eth0
ip link set eth0 up
ip route add default via "$GW"
R={newroot}
mkdir -p /image /rw $R
mount -t ext4 -o ro /dev/vda /image || poweroff -f
mount -t tmpfs -o size=32m,mode=0755 rw /rw
mkdir -p /rw/upper /rw/work
mount -t overlay -o lowerdir=/image,upperdir=/rw/upper,workdir=/rw/work overlay $R
# Every path inside the image is resolved from a chroot into it, so that the image's own
# symlinks resolve against its root, never the initramfs's: busybox and the sandbox's files
# visit the image for that only.
rm -rf $R/.sandgate && mkdir -m 0700 $R/.sandgate
cp -r /bin/busybox /sandgate/files /sandgate/files.list $R/.sandgate/
chroot $R /.sandgate/busybox sh -c '
  b=/.sandgate/busybox
  while read -r n target; do
    $b rm -f "$target"; $b mkdir -p "${{target%/*}}"
    $b cat "/.sandgate/files/$n" > "$target"; $b chmod 0644 "$target"
  done < /.sandgate/files.list
  $b mkdir -p /tmp /workspace /proc /sys /dev
  $b mount -t tmpfs -o nosuid,nodev,mode=1777,size=$1m tmp /tmp
  $b mount -t tmpfs -o nosuid,nodev,mode=0755,uid=$2,gid=$3,size=$1m workspace /workspace
  $b mount -t proc proc /proc
  $b mount -t sysfs -o ro,nosuid,nodev,noexec sys /sys
  $b mount -t devtmpfs dev /dev' - "$DISK" "$SUID" "$SGID" || poweroff -f
rm -rf $R/.sandgate
mount -o remount,ro $R
export HOME=/tmp PATH=/bin:/sbin:/usr/bin:/usr/sbin
while [ -z "$PORT" ]; do PORT=$(ls /dev/vport*p1 2>/dev/null | head -n 1); done
# A virtio port opens once: read-write on fd 0, duplicated to fd 1. While the host side is
# not connected, reads end at once; the pause keeps that loop from spinning.
while true; do sh /agent <>"$PORT" 1>&0 2>/dev/null; sleep 0.02; done
"""

# One request per line: "<id> <base64 script> <base64 stdin or -> <timeout seconds>".
# One answer per line:  "<id> <exit code> <base64 stdout or -> <base64 stderr or ->".
AGENT = """echo READY
while read -r id script input limit; do
  echo "$script" | base64 -d > /tmp/.sg.sh
  if [ "$input" = - ]; then : > /tmp/.sg.in; else echo "$input" | base64 -d > /tmp/.sg.in; fi
  timeout -s KILL "$limit" sh /tmp/.sg.sh < /tmp/.sg.in > /tmp/.sg.out 2> /tmp/.sg.err
  code=$?
  out=$(base64 < /tmp/.sg.out | tr -d '\\n'); err=$(base64 < /tmp/.sg.err | tr -d '\\n')
  echo "$id $code ${out:--} ${err:--}"
done
"""


@dataclass(frozen=True, slots=True)
class VmImage:
    kernel: Path
    initrd: Path
    hz: int          # the kernel's CONFIG_HZ (for a preset loops-per-jiffy)


def _run(*cmd: str, cwd: Path | None = None) -> str:
    result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False,
                            timeout=600)
    if result.returncode != 0:
        raise RuntimeFailure(f"{cmd[0]} failed: {result.stderr.strip()[-300:]}")
    return result.stdout


def _kernel_package() -> str:
    for line in _run("apt-cache", "depends", KERNEL_PACKAGE).splitlines():
        if line.strip().startswith("Depends: linux-image-"):
            return line.split(":", 1)[1].strip()
    raise RuntimeFailure(f"cannot find the kernel that {KERNEL_PACKAGE} depends on "
                         "(apt-get update?)")


def _unpacked(cache: Path) -> tuple[Path, Path | None]:
    root = cache / _kernel_package()
    vmlinuz = next(iter((root / "boot").glob("vmlinuz-*")), None) if root.exists() else None
    return root, vmlinuz


def _kernel(cache: Path) -> tuple[Path, Path]:
    """(vmlinuz, modules directory) of the cloud kernel, unpacked under `cache`."""
    root, vmlinuz = _unpacked(cache)
    if vmlinuz is None:
        raise RuntimeFailure(f"no microVM kernel in {cache}; fetch it once with "
                             "scripts/bootstrap.sh (make up and make test run it)")
    (modules,) = (root / "lib" / "modules").iterdir()
    return vmlinuz, modules


def fetch_kernel(cache: Path) -> Path:
    """Download and unpack the cloud kernel into `cache` unless it is there: the one step
    of the microVM runtime that needs the package mirror, taken at set-up time."""
    cache.mkdir(parents=True, exist_ok=True, mode=0o700)
    root, vmlinuz = _unpacked(cache)
    if vmlinuz is None:
        with tempfile.TemporaryDirectory(dir=cache) as tmp:
            _run("apt-get", "download", "-o", "Acquire::Retries=5", root.name, cwd=Path(tmp))
            (deb,) = Path(tmp).glob("*.deb")
            shutil.rmtree(root, ignore_errors=True)
            _run("dpkg-deb", "-x", str(deb), str(root))
    return root


def _busybox() -> Path:
    path = shutil.which("busybox")
    if path is None:
        raise RuntimeFailure("busybox not found; install busybox-static")
    if b"ld-linux" in Path(path).read_bytes()[:4096]:
        raise RuntimeFailure(f"{path} is dynamically linked; install busybox-static")
    return Path(path)


def build(cache: Path) -> VmImage:
    """The kernel and initramfs, built once and reused while their inputs are unchanged."""
    cache.mkdir(parents=True, exist_ok=True, mode=0o700)
    vmlinuz, modules = _kernel(cache)
    busybox = _busybox()
    init = INIT.format(modules=" ".join(MODULES), newroot=NEWROOT)
    key = hashlib.sha256(b"\0".join([str(vmlinuz).encode(), busybox.read_bytes(),
                                     init.encode(), AGENT.encode()])).hexdigest()[:16]
    initrd = cache / f"initrd-{key}.cpio.gz"
    if not initrd.exists():
        _pack(initrd, busybox, modules, init)
    return VmImage(vmlinuz, initrd, _hz(vmlinuz))


def sandbox_initrd(base: Path, files: tuple[FileMount, ...], target: Path) -> Path:
    """`base` followed by a small archive of the sandbox's own files (`/sandgate/files/N` and
    `/sandgate/files.list`: "N TARGET" per line), which init places in the image's view. The
    kernel unpacks concatenated archives; the second must start on a 4-byte boundary."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "sandgate" / "files").mkdir(parents=True)
        listing = []
        for n, mount in enumerate(files):
            shutil.copyfile(mount.source, root / "sandgate" / "files" / str(n))
            listing.append(f"{n} {mount.target}\n")
        (root / "sandgate" / "files.list").write_text("".join(listing))
        extra = _cpio(root)
    data = base.read_bytes()
    target.write_bytes(data + b"\0" * (-len(data) % 4) + extra)
    return target


def _cpio(root: Path) -> bytes:
    files = sorted(str(p.relative_to(root)) for p in root.rglob("*"))
    archive = subprocess.run(["cpio", "-o", "-H", "newc", "--quiet"], cwd=root,
                             input="\n".join(files).encode(), capture_output=True, check=False)
    if archive.returncode != 0:
        raise RuntimeFailure(f"cpio failed: {archive.stderr.decode()[-300:]}")
    return archive.stdout


def _hz(vmlinuz: Path) -> int:
    config = next(vmlinuz.parent.glob("config-*"), None)
    if config is not None:
        for line in config.read_text().splitlines():
            if line.startswith("CONFIG_HZ="):
                return int(line.split("=")[1])
    return 250


def _pack(target: Path, busybox: Path, modules: Path, init: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "bin").mkdir()
        shutil.copy2(busybox, root / "bin" / "busybox")
        (root / "lib" / "modules").mkdir(parents=True)
        for name in MODULES:
            found = list(modules.rglob(f"{name}.ko"))
            if not found:
                raise RuntimeFailure(f"kernel module {name}.ko missing from {modules}")
            shutil.copy2(found[0], root / "lib" / "modules" / f"{name}.ko")
        (root / "init").write_text(init)
        (root / "agent").write_text(AGENT)
        os.chmod(root / "init", 0o755)  # noqa: S103 - the guest's init, inside the image
        archive = _cpio(root)
        partial = target.with_suffix(".tmp")
        with open(partial, "wb") as out:
            subprocess.run(["gzip", "-1"], input=archive, stdout=out, check=True)
        os.replace(partial, target)


if __name__ == "__main__":   # scripts/bootstrap.sh: python -m sandbox_net.runtime.microvm_image DIR
    import sys

    try:
        print(fetch_kernel(Path(sys.argv[1])))
    except RuntimeFailure as e:
        sys.exit(f"microvm kernel: {e}")
