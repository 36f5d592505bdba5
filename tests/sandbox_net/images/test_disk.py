"""An image's tree as an ext4 file (mkfs.ext4 -d, no mount, no root needed): its content,
read back with debugfs, and the same bytes for the same tree."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

from sandbox_net.images import disk
from tests.images import tiny_rootfs

IMAGE_ID = "ab" * 32


def debugfs(image: Path, request: str) -> str:
    return subprocess.run(["debugfs", "-R", request, str(image)], capture_output=True,
                          text=True, check=True).stdout


def test_the_tree_is_in_the_filesystem(tmp_path: Path) -> None:
    root = tiny_rootfs(tmp_path / "root")
    (root / "usr" / "bin").mkdir(parents=True)
    (root / "usr" / "bin" / "tool").write_bytes(b"\x7fELF" + bytes(10000))
    os.chmod(root / "usr" / "bin" / "tool", 0o755)
    (root / "bin").symlink_to("usr/bin")
    target = disk.ensure(root, tmp_path / "root.ext4", IMAGE_ID)
    assert "agent:x:1000" in debugfs(target, "cat /etc/passwd")
    listing = debugfs(target, "ls -l /usr/bin")
    assert "tool" in listing and "100755" in listing and "10004" in listing
    assert "usr/bin" in debugfs(target, "stat /bin")           # a symlink, kept as one
    assert target.stat().st_mode & 0o777 == 0o600
    assert list(tmp_path.glob("*.tmp")) == []


def test_the_same_tree_gives_the_same_bytes_and_is_built_once(tmp_path: Path) -> None:
    root = tiny_rootfs(tmp_path / "root")
    first = disk.ensure(root, tmp_path / "a.ext4", IMAGE_ID)
    second = disk.ensure(root, tmp_path / "b.ext4", IMAGE_ID)
    digest = [hashlib.sha256(p.read_bytes()).hexdigest() for p in (first, second)]
    assert digest[0] == digest[1]
    built = first.stat().st_mtime_ns
    assert disk.ensure(root, first, IMAGE_ID).stat().st_mtime_ns == built
