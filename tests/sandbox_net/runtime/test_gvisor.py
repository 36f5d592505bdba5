"""The OCI bundle of a gVisor sandbox: the image's tree as a read-only root, nothing of the
host's filesystem but the files the gateway gives, the sandbox's user, size-limited tmpfs."""

from __future__ import annotations

from pathlib import Path

from sandbox_net.runtime.base import FileMount, RootImage, SandboxSpec
from sandbox_net.runtime.gvisor import bundle_config


def spec(tmp_path: Path, **fields: object) -> SandboxSpec:
    root = RootImage("ab" * 32, tmp_path / "image" / "rootfs", tmp_path / "image" / "root.ext4")
    files = (FileMount(tmp_path / "resolv.conf", "/etc/resolv.conf"),)
    return SandboxSpec("a1b2c3d4", "/run/netns/t-a1b2c3d4", tmp_path, root=root,
                       files=files, env={"PATH": "/usr/bin"}, **fields)  # type: ignore[arg-type]


def test_the_root_is_the_image_read_only(tmp_path: Path) -> None:
    config = bundle_config(spec(tmp_path))
    assert config["root"] == {"path": str(tmp_path / "image" / "rootfs"), "readonly": True}
    binds = [m for m in config["mounts"] if m["type"] == "bind"]
    assert binds == [{"destination": "/etc/resolv.conf", "type": "bind",
                      "source": str(tmp_path / "resolv.conf"), "options": ["rbind", "ro"]}]
    assert "user" not in [n["type"] for n in config["linux"]["namespaces"]]
    assert "network" not in [n["type"] for n in config["linux"]["namespaces"]]


def test_the_sandbox_user_and_its_writable_places(tmp_path: Path) -> None:
    config = bundle_config(spec(tmp_path, uid=1234, gid=50, disk_mb=64))
    assert config["process"]["user"] == {"uid": 1234, "gid": 50}
    assert config["process"]["noNewPrivileges"] is True
    assert config["process"]["env"] == ["PATH=/usr/bin"]
    tmpfs = {m["destination"]: m["options"] for m in config["mounts"]
             if m["type"] == "tmpfs" and m["destination"] != "/dev"}
    assert tmpfs == {"/tmp": ["nosuid", "nodev", "mode=1777", "size=64m"],
                     "/workspace": ["nosuid", "nodev", "mode=0755", "uid=1234", "gid=50",
                                    "size=64m"]}
