"""Images for tests, made on the spot with no network: tiny trees committed straight to an
image store, and OCI layouts or `docker save` archives written with tarfile (members of any
kind, hostile ones included, whiteouts as OCI spells them). Writing archives here is the
test's job; reading them is skopeo's and umoci's (sandbox_net/images/oci.py)."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.home import default_cache_dir
from sandbox_net.images.store import Image, ImageMeta, ImageStore, now

PASSWD = "root:x:0:0:root:/root:/bin/sh\nagent:x:1000:1000::/home/agent:/bin/sh\n"
GROUP = "root:x:0:\nagent:x:1000:\n"


def tiny_rootfs(path: Path, passwd: str = PASSWD, group: str = GROUP) -> Path:
    (path / "etc").mkdir(parents=True)
    (path / "etc" / "passwd").write_text(passwd)
    (path / "etc" / "group").write_text(group)
    (path / "workspace").mkdir()
    return path


def add_image(store: ImageStore, name: str, tree: Path | None = None, **meta: Any) -> Image:
    """Commit a tree (default: a tiny one) as image `name`, as a build or import would.
    Never into the host's store: a tiny `base` there would be what every later sandbox of
    every gateway on the host runs on."""
    if store.root.resolve() == (default_cache_dir() / "images").resolve():
        raise AssertionError(f"a test image in the host's store {store.root}: give the test's "
                             "Settings a cache_dir of its own")
    with store.staging() as staging:
        rootfs = tree or tiny_rootfs(staging / "rootfs")
        image_id = hashlib.sha256(json.dumps([name, meta], sort_keys=True).encode()).hexdigest()
        fields = {"source": "packages", "created": now(), "size_bytes": 4096,
                  "workdir": "/workspace", "user": "agent", **meta}
        return store.commit(name, image_id, rootfs, ImageMeta(**fields))


@dataclass(frozen=True)
class Member:
    """One tar member: kind is file, dir, symlink, hardlink or chardev."""

    name: str
    kind: str = "file"
    data: bytes = b""
    mode: int = 0o644
    target: str = ""              # link target
    device: tuple[int, int] = (0, 0)


def whiteout(path: str) -> Member:
    """OCI's deletion marker for `path` in a lower layer."""
    head, _, base = path.rpartition("/")
    return Member(f"{head}/.wh.{base}" if head else f".wh.{base}")


def opaque(directory: str) -> Member:
    """OCI's marker hiding everything a lower layer had in `directory`."""
    return Member(f"{directory}/.wh..wh..opq")


def layer_bytes(members: list[Member]) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for m in members:
            info = tarfile.TarInfo(m.name)
            info.mtime, info.mode = 1700000000, m.mode
            data = None
            if m.kind == "file":
                info.size, data = len(m.data), io.BytesIO(m.data)
            elif m.kind == "dir":
                info.type = tarfile.DIRTYPE
            elif m.kind == "symlink":
                info.type, info.linkname = tarfile.SYMTYPE, m.target
            elif m.kind == "hardlink":
                info.type, info.linkname = tarfile.LNKTYPE, m.target
            elif m.kind == "chardev":
                info.type, (info.devmajor, info.devminor) = tarfile.CHRTYPE, m.device
            tar.addfile(info, data)
    return raw.getvalue()


def tree_layer(root: Path, target: Path, leave_out: tuple[str, ...] = ()) -> Path:
    """A layer holding the tree `root` (e.g. the base image's rootfs) but the paths in
    `leave_out`, written to `target` without holding it in memory."""
    def keep(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
        return None if info.name in leave_out else info

    with tarfile.open(target, "w", format=tarfile.PAX_FORMAT) as tar:
        for entry in sorted(os.listdir(root)):
            tar.add(root / entry, arcname=entry, filter=keep)
    return target


def _digest(path: Path) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            sha.update(chunk)
    return sha.hexdigest()


class OciLayout:
    """An OCI image layout under construction: add layers, then write the config."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.blobs = path / "blobs" / "sha256"
        self.blobs.mkdir(parents=True)
        self.layers: list[dict[str, Any]] = []
        self.diff_ids: list[str] = []

    def _blob(self, data: bytes, media: str) -> dict[str, Any]:
        digest = hashlib.sha256(data).hexdigest()
        (self.blobs / digest).write_bytes(data)
        return {"mediaType": media, "digest": f"sha256:{digest}", "size": len(data)}

    def add(self, members: list[Member], *, compress: bool = True) -> None:
        raw = layer_bytes(members)
        self.diff_ids.append("sha256:" + hashlib.sha256(raw).hexdigest())
        media = "application/vnd.oci.image.layer.v1.tar"
        self.layers.append(self._blob(gzip.compress(raw, mtime=0), media + "+gzip")
                           if compress else self._blob(raw, media))

    def add_file(self, tar: Path) -> None:
        """An uncompressed layer from a tar file already on disk (moved into the layout)."""
        digest = _digest(tar)
        size = tar.stat().st_size
        tar.rename(self.blobs / digest)
        self.diff_ids.append(f"sha256:{digest}")
        self.layers.append({"mediaType": "application/vnd.oci.image.layer.v1.tar",
                            "digest": f"sha256:{digest}", "size": size})

    def config(self, run: dict[str, Any]) -> dict[str, Any]:
        return {"architecture": "amd64", "os": "linux", "created": "2023-11-14T22:13:20Z",
                "config": run, "rootfs": {"type": "layers", "diff_ids": self.diff_ids},
                "history": [{"created": "2023-11-14T22:13:20Z", "created_by": f"layer {i}"}
                            for i in range(len(self.layers))]}

    def write(self, run: dict[str, Any], tag: str = "latest") -> Path:
        config = self._blob(json.dumps(self.config(run)).encode(),
                            "application/vnd.oci.image.config.v1+json")
        manifest = self._blob(json.dumps({
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": config, "layers": self.layers}).encode(),
            "application/vnd.oci.image.manifest.v1+json")
        manifest["annotations"] = {"org.opencontainers.image.ref.name": tag}
        (self.path / "index.json").write_text(json.dumps({"schemaVersion": 2,
                                                          "manifests": [manifest]}))
        (self.path / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
        return self.path


def docker_archive(path: Path, layers: list[list[Member]], run: dict[str, Any]) -> Path:
    """A `docker save` archive: manifest.json, the config, one tar per layer."""
    raws = [layer_bytes(members) for members in layers]
    diff_ids = ["sha256:" + hashlib.sha256(raw).hexdigest() for raw in raws]
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": run,
                         "created": "2023-11-14T22:13:20Z",
                         "rootfs": {"type": "layers", "diff_ids": diff_ids}}).encode()
    config_name = hashlib.sha256(config).hexdigest() + ".json"
    names = [f"{d[7:]}/layer.tar" for d in diff_ids]
    manifest = json.dumps([{"Config": config_name, "RepoTags": ["test/image:latest"],
                            "Layers": names}]).encode()
    with tarfile.open(path, "w") as tar:
        for name, data in ((config_name, config), ("manifest.json", manifest),
                           *zip(names, raws, strict=True)):
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), 1700000000
            tar.addfile(info, io.BytesIO(data))
    return path
