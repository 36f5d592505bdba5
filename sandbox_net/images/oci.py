"""OCI images imported from a file (`sandgate image import NAME PATH`): an OCI image layout
directory, an OCI archive, or a `docker save` / `podman save` archive.

Nothing here walks a tar archive. skopeo copies the input into a fresh OCI layout of ours
(checking every blob's digest), and umoci unpacks its layers with their whiteouts in
rootless mode, which neutralises what a hostile layer can carry: member paths with `..` or
a leading `/` land inside the root, links are created as links (and never followed by the
host afterwards: rootfs.py), hard links must point inside the root, device nodes become
empty files. Then setuid and setgid bits are stripped (rootfs.sanitise). The image's `Env`,
`WorkingDir` and `User` are kept for its sandboxes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import platform
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any, TextIO

from sandbox_net.errors import ImageError
from sandbox_net.images import rootfs, users
from sandbox_net.images.store import Image, ImageMeta, ImageStore, check_name, now

UNPACK_VERSION = 1
TAG = "image"
CONFIG_LIMIT = 4 * 1024 * 1024
ARCHITECTURES = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386"}
# Local files only: any other transport (a registry above all) is refused by skopeo itself.
SKOPEO_POLICY = {"default": [{"type": "reject"}], "transports": {
    t: {"": [{"type": "insecureAcceptAnything"}]}
    for t in ("oci", "oci-archive", "docker-archive")}}


def source_reference(path: Path) -> str:
    """skopeo's name for the image at `path`."""
    if ":" in str(path):
        raise ImageError(f"{path}: skopeo cannot take a path with ':' in it; rename it")
    if path.is_dir():
        if not (path / "oci-layout").is_file():
            raise ImageError(f"{path} is a directory but not an OCI image layout "
                             "(it has no oci-layout file)")
        return f"oci:{path}"
    if not path.is_file():
        raise ImageError(f"{path} does not exist")
    return f"{_archive_kind(path)}:{path}"


def _archive_kind(path: Path) -> str:
    """Whether a tar archive is a docker/podman save or an OCI archive, by its top-level
    names (only member headers are read)."""
    try:
        with tarfile.open(path) as archive:
            for member in archive:
                name = member.name.removeprefix("./")
                if name == "manifest.json":
                    return "docker-archive"
                if name == "oci-layout":
                    return "oci-archive"
    except (tarfile.TarError, OSError) as e:
        raise ImageError(f"{path} is not a readable tar archive: {e}") from None
    raise ImageError(f"{path} is neither a docker save archive (manifest.json) nor an OCI "
                     "archive (oci-layout)")


def _run(argv: list[str], progress: TextIO) -> None:
    try:
        result = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True,
                                text=True, check=False, timeout=3600)
    except FileNotFoundError:
        raise ImageError(f"{argv[0]} not found; install it (scripts/bootstrap.sh does)") from None
    if result.returncode != 0:
        lines = result.stderr.strip().splitlines()
        raise ImageError(f"{argv[0]} failed: {lines[-1] if lines else result.returncode}")
    progress.write(result.stdout + result.stderr)


def _blob(layout: Path, descriptor: dict[str, Any]) -> dict[str, Any]:
    algorithm, _, digest = str(descriptor.get("digest", "")).partition(":")
    if algorithm != "sha256" or len(digest) != 64 or not all(
            c in "0123456789abcdef" for c in digest):
        raise ImageError(f"unexpected digest {descriptor.get('digest')!r} in the image")
    data = (layout / "blobs" / "sha256" / digest).read_bytes()[:CONFIG_LIMIT]
    value: dict[str, Any] = json.loads(data)
    return value


def read_config(layout: Path) -> tuple[str, dict[str, Any]]:
    """(config digest, config) of the image tagged TAG in a layout skopeo wrote."""
    index = json.loads((layout / "index.json").read_text())
    manifests = [m for m in index.get("manifests", [])
                 if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == TAG]
    if len(manifests) != 1:
        raise ImageError("the copied image has no single manifest")
    descriptor = _blob(layout, manifests[0]).get("config", {})
    return str(descriptor.get("digest")), _blob(layout, descriptor)


def _env(config: dict[str, Any]) -> dict[str, str]:
    pairs = (str(item).partition("=") for item in config.get("Env") or [])
    return {key: value for key, sep, value in pairs if sep and key and "\0" not in key + value}


def _check_arch(config: dict[str, Any]) -> None:
    host = ARCHITECTURES.get(platform.machine(), platform.machine())
    arch = config.get("architecture")
    if arch and arch != host:
        raise ImageError(f"the image is built for {arch}; this host runs {host}")


def import_image(store: ImageStore, name: str, source: Path, *,
                 progress: TextIO = sys.stderr) -> Image:
    check_name(name)
    reference = source_reference(source.resolve())
    with store.staging() as staging:
        policy, layout = staging / "policy.json", staging / "layout"
        policy.write_text(json.dumps(SKOPEO_POLICY))
        _run(["skopeo", "--policy", str(policy), "copy", "--quiet", reference,
              f"oci:{layout}:{TAG}"], progress)
        digest, config = read_config(layout)
        _check_arch(config)
        run = config.get("config") or {}
        image_id = hashlib.sha256(f"oci-{UNPACK_VERSION}\0{digest}".encode()).hexdigest()
        meta = ImageMeta(source="oci", created=now(), size_bytes=0, env=_env(run),
                         workdir=run.get("WorkingDir") or None, user=run.get("User") or None,
                         cmd=[str(a) for a in (run.get("Entrypoint") or []) +
                              (run.get("Cmd") or [])],
                         origin=str(source), digest=digest)
        if store.has(image_id):
            return store.commit(name, image_id, None, meta)
        tree = staging / "rootfs"
        _run(["umoci", "raw", "unpack", "--rootless", "--image", f"{layout}:{TAG}",
              str(tree)], progress)
        rootfs.sanitise(tree)
        _check_runtime_config(tree, meta)
        size, _ = rootfs.disk_usage(tree)
        return store.commit(name, image_id, tree, dataclasses.replace(meta, size_bytes=size))


def _check_runtime_config(tree: Path, meta: ImageMeta) -> None:
    """The image's user must exist in it, and its working directory too (created like a
    container engine would, never through one of the image's symlinks)."""
    if meta.user:
        users.resolve(tree, meta.user)
    if meta.workdir:
        if not meta.workdir.startswith("/"):
            raise ImageError(f"the image's WorkingDir {meta.workdir!r} is not absolute")
        if not rootfs.is_dir(tree, meta.workdir):
            rootfs.make_dirs(tree, meta.workdir)
