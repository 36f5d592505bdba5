"""The microVM guest: the per-sandbox archive appended to the shared initramfs, and the
script the agent runs for each command (the image's root, the sandbox's user, no new
privileges)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from sandbox_net.runtime.base import FileMount
from sandbox_net.runtime.microvm_image import sandbox_initrd
from sandbox_net.runtime.vm_agent import script_for


def test_the_sandbox_files_follow_the_initramfs_on_a_4_byte_boundary(tmp_path: Path) -> None:
    base = tmp_path / "base.cpio.gz"
    base.write_bytes(b"\x1f\x8b" + b"z" * 13)               # 15 bytes: padding needed
    (tmp_path / "ca.pem").write_text("CA\n")
    (tmp_path / "resolv").write_text("nameserver 10.77.0.1\n")
    files = (FileMount(tmp_path / "resolv", "/etc/resolv.conf"),
             FileMount(tmp_path / "ca.pem", "/etc/ssl/certs/ca-certificates.crt"))
    data = sandbox_initrd(base, files, tmp_path / "initrd.img").read_bytes()
    assert data[:15] == base.read_bytes() and data[15:16] == b"\0"
    assert data[16:22] == b"070701"                           # newc, at offset 16
    listing = subprocess.run(["cpio", "-i", "--to-stdout", "sandgate/files.list"],
                             input=data[16:], capture_output=True, check=True).stdout
    assert listing.decode().splitlines() == ["0 /etc/resolv.conf",
                                             "1 /etc/ssl/certs/ca-certificates.crt"]
    second = subprocess.run(["cpio", "-i", "--to-stdout", "sandgate/files/1"],
                            input=data[16:], capture_output=True, check=True).stdout
    assert second == b"CA\n"


def test_a_command_enters_the_image_as_the_sandbox_user() -> None:
    script = script_for(["python3", "-c", "print('a b')"], {"FOO": "x y", "BAD KEY": "z"},
                        "/srv/./app", 1234, 50)
    lines = script.splitlines()
    assert lines[0] == "export FOO='x y'" and "BAD KEY" not in script
    assert lines[2] == ("exec /bin/busybox setpriv --nnp /bin/busybox nsenter -F -r/newroot "
                        "-w/newroot/srv/app -S 1234 -G 50 -- python3 -c 'print('\"'\"'a b'\"'\"')'")


def test_a_working_directory_through_a_symlink_is_refused(tmp_path: Path) -> None:
    """nsenter opens the directory before it enters the image's root: a symlink there would
    resolve outside it. The script's check, run by a real shell on a tree standing in for
    the image."""
    root = tmp_path / "newroot"
    (root / "srv" / "app").mkdir(parents=True)
    (root / "link").symlink_to("/")
    (root / "srv" / "uplink").symlink_to("../..")

    def check(cwd: str) -> int:
        line = script_for(["true"], {}, cwd, 1000, 1000).splitlines()[0]
        return subprocess.run(["sh", "-c", line.replace("/newroot", str(root))],
                              capture_output=True, check=False).returncode

    assert [check(c) for c in ("/srv/app", "/", "/srv/app/../app")] == [0, 0, 0]
    assert [check(c) for c in ("/link", "/link/tmp", "/srv/uplink", "/missing",
                               "/srv/app/../../link")] == [126] * 5
