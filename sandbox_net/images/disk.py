"""An image's tree as an ext4 filesystem file, the read-only block device a microVM boots on.

`mkfs.ext4 -d DIR` fills the filesystem from the directory without mounting anything (no
loop device, no kernel parsing of an image on the host). No journal (the guest mounts it
read-only), a fixed timestamp and a UUID derived from the image id, so the same tree gives
the same bytes.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import uuid
from pathlib import Path

from sandbox_net.errors import ImageError
from sandbox_net.images.rootfs import disk_usage

EPOCH = "1700000000"
BLOCK = 4096
SLACK_BYTES = 64 * 1024 * 1024    # ext4's own metadata (inode tables, bitmaps, directories)


def ensure(rootfs: Path, target: Path, image_id: str) -> Path:
    """`target`, built from `rootfs` unless it exists (one builder at a time per image)."""
    if not target.exists():
        with open(target.with_name(target.name + ".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not target.exists():
                make_ext4(rootfs, target, image_id)
    return target


def make_ext4(rootfs: Path, target: Path, image_id: str) -> None:
    used, entries = disk_usage(rootfs)
    size = (used * 11 // 10 + SLACK_BYTES) // BLOCK * BLOCK
    inodes = entries + entries // 5 + 1024
    fs_uuid = str(uuid.UUID(image_id[:32]))
    partial = target.with_name(target.name + f".{os.getpid()}.tmp")
    command = ["mkfs.ext4", "-q", "-F", "-b", str(BLOCK), "-N", str(inodes), "-m", "0",
               "-L", "sgroot", "-O", "^has_journal,^resize_inode", "-U", fs_uuid,
               "-E", f"hash_seed={fs_uuid},root_owner=0:0", "-d", str(rootfs), str(partial),
               str(size // 1024) + "k"]
    try:
        result = subprocess.run(command, capture_output=True, text=True, check=False,
                                timeout=900, env={**os.environ, "E2FSPROGS_FAKE_TIME": EPOCH})
    except FileNotFoundError:
        raise ImageError("mkfs.ext4 not found; install e2fsprogs") from None
    if result.returncode != 0:
        partial.unlink(missing_ok=True)
        raise ImageError(f"mkfs.ext4 failed: {result.stderr.strip()[-300:]}")
    partial.chmod(0o600)
    os.replace(partial, target)
