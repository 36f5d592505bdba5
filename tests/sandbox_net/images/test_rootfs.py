"""Reading an image's files from the host never follows one of its symlinks; cleaning an
image strips setuid bits and special files."""

from __future__ import annotations

import os
import socket
import stat
from pathlib import Path

import pytest

from sandbox_net.errors import ImageError
from sandbox_net.images import rootfs


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "passwd").write_text("agent:x:1000:1000::/:/bin/sh\n")
    (tmp_path / "host-secret").write_text("the host's\n")
    return root


def test_a_regular_file_is_read_and_a_missing_one_is_none(tree: Path) -> None:
    assert rootfs.read_text(tree, "/etc/passwd") == "agent:x:1000:1000::/:/bin/sh\n"
    assert rootfs.read_text(tree, "etc/./passwd") == "agent:x:1000:1000::/:/bin/sh\n"
    assert rootfs.read_text(tree, "/etc/group") is None
    assert rootfs.read_text(tree, "/nowhere/group") is None


@pytest.mark.parametrize("target", ["{host}/host-secret", "../../host-secret"])
def test_a_symlinked_file_is_refused(tree: Path, tmp_path: Path, target: str) -> None:
    (tree / "etc" / "passwd").unlink()
    (tree / "etc" / "passwd").symlink_to(target.format(host=tmp_path))
    with pytest.raises(ImageError, match="symlink"):
        rootfs.read_text(tree, "/etc/passwd")


def test_a_symlinked_directory_on_the_way_is_refused(tree: Path, tmp_path: Path) -> None:
    (tmp_path / "passwd").write_text("root:x:0:0::/:/bin/sh\n")
    (tree / "etc" / "passwd").unlink()
    (tree / "etc").rmdir()
    (tree / "etc").symlink_to(tmp_path)
    with pytest.raises(ImageError, match="symlink"):
        rootfs.read_text(tree, "/etc/passwd")


def test_dot_dot_and_special_files_are_refused(tree: Path) -> None:
    with pytest.raises(ImageError, match="leaves the image's root"):
        rootfs.read_text(tree, "/etc/../../host-secret")
    os.mkfifo(tree / "etc" / "fifo")      # opening it must not block
    with pytest.raises(ImageError, match="not a regular file"):
        rootfs.read_text(tree, "/etc/fifo")


def test_directories_are_made_inside_and_never_through_a_link(tree: Path,
                                                              tmp_path: Path) -> None:
    rootfs.make_dirs(tree, "/srv/app/data")
    assert rootfs.is_dir(tree, "/srv/app/data") and rootfs.is_dir(tree, "/")
    (tree / "opt").symlink_to(tmp_path)
    with pytest.raises(ImageError, match="symlink"):
        rootfs.make_dirs(tree, "/opt/evil")
    assert not (tmp_path / "evil").exists()
    assert not rootfs.is_dir(tree, "/opt")           # a link to a directory is not one


def test_sanitise_strips_setuid_and_special_files(tree: Path) -> None:
    tool = tree / "bin" / "tool"
    tool.parent.mkdir()
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o6755)
    os.mkfifo(tree / "etc" / "fifo")
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(tree / "etc" / "sock"))
    (tree / "etc" / "link").symlink_to("/etc/shadow")
    rootfs.sanitise(tree)
    assert stat.S_IMODE(tool.stat().st_mode) == 0o755
    assert not (tree / "etc" / "fifo").exists() and not (tree / "etc" / "sock").exists()
    assert (tree / "etc" / "link").is_symlink()       # links stay (they resolve inside)


def test_disk_usage_counts_blocks_and_entries(tree: Path) -> None:
    (tree / "etc" / "big").write_bytes(b"x" * 5000)
    used, entries = rootfs.disk_usage(tree)
    assert entries == 3 and used == 4096 + 4096 + 8192


def test_may_exist_counts_links_and_what_a_link_on_the_way_may_lead_to(tree: Path) -> None:
    (tree / "etc" / "cert.pem").symlink_to("/nowhere")
    (tree / "etc" / "pki").symlink_to("/")
    assert rootfs.may_exist(tree, "/etc/passwd") and rootfs.may_exist(tree, "/etc/cert.pem")
    assert rootfs.may_exist(tree, "/etc/pki/tls/certs/ca-bundle.crt")
    assert not rootfs.may_exist(tree, "/etc/ssl/ca-bundle.pem")
