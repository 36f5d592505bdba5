"""Importing OCI images with the real skopeo and umoci (no root needed): layers and their
whiteouts, the image's Env, WorkingDir and User, docker save and OCI archives, and what a
hostile layer carries, checked on the host's side (the sandbox's side is in
tests/security/test_images.py)."""

from __future__ import annotations

import io
import stat
import tarfile
from pathlib import Path

import pytest

from sandbox_net.errors import ImageError
from sandbox_net.images.oci import import_image, source_reference
from sandbox_net.images.store import Image, ImageStore
from tests.images import GROUP, PASSWD, Member, OciLayout, docker_archive, opaque, whiteout

BASE = [Member("etc", "dir", mode=0o755), Member("etc/passwd", data=PASSWD.encode()),
        Member("etc/group", data=GROUP.encode()), Member("etc/gone", data=b"gone\n"),
        Member("opt", "dir", mode=0o755), Member("opt/old", "dir", mode=0o755),
        Member("opt/old/a", data=b"a\n")]
RUN = {"Env": ["PATH=/bin", "FOO=bar", "BROKEN"], "WorkingDir": "/srv/work",
       "User": "agent", "Entrypoint": ["/bin/sh"], "Cmd": ["-c", "true"]}


@pytest.fixture
def store(tmp_path: Path) -> ImageStore:
    return ImageStore(tmp_path / "images")


def quiet_import(store: ImageStore, name: str, source: Path) -> Image:
    return import_image(store, name, source, progress=io.StringIO())


def layout(path: Path, *layers: list[Member], run: dict[str, object] = RUN) -> Path:
    oci = OciLayout(path)
    for number, members in enumerate(layers):
        oci.add(members, compress=number % 2 == 0)
    return oci.write(run)


def test_layers_whiteouts_and_runtime_config(store: ImageStore, tmp_path: Path) -> None:
    second = [whiteout("etc/gone"), opaque("opt/old"), Member("opt/old/b", data=b"b\n"),
              Member("etc/added", data=b"added\n")]
    image = quiet_import(store, "app", layout(tmp_path / "src", BASE, second))
    root = image.rootfs
    assert (root / "etc" / "added").read_text() == "added\n"
    assert not (root / "etc" / "gone").exists()
    assert sorted(p.name for p in (root / "opt" / "old").iterdir()) == ["b"]
    assert (root / "srv" / "work").is_dir()                 # WorkingDir made, as engines do
    meta = image.meta
    assert (meta.source, meta.env, meta.workdir, meta.user) == (
        "oci", {"PATH": "/bin", "FOO": "bar"}, "/srv/work", "agent")
    assert meta.cmd == ["/bin/sh", "-c", "true"] and meta.digest.startswith("sha256:")
    again = quiet_import(store, "app2", tmp_path / "src")
    assert again.id == image.id                             # same content, unpacked once


def test_hostile_members_are_neutralised_on_the_host(store: ImageStore, tmp_path: Path) -> None:
    aim = tmp_path / "aim"
    aim.mkdir()
    hostile = [
        Member("../../escape", data=b"x\n"), Member("/absolute", data=b"x\n"),
        Member("etc/abslink", "symlink", target="/etc/shadow"),
        Member("etc/uplink", "symlink", target="../../../../../../.." + str(aim)),
        Member("etc/uplink/through", data=b"x\n"),
        Member("etc/hardpasswd", "hardlink", target="/etc/passwd"),
        Member("opt/mem", "chardev", mode=0o666, device=(1, 1)),
        Member("opt/suid", data=b"#!/bin/sh\n", mode=0o4755),
        Member("opt/sgid", data=b"#!/bin/sh\n", mode=0o2755),
    ]
    image = quiet_import(store, "hostile", layout(tmp_path / "src", BASE, hostile))
    root = image.rootfs
    # nothing outside the tree it was unpacked into
    for outside in (tmp_path / "escape", store.root / "escape", store.root / "staging" / "escape",
                    store.root / "content" / "escape", Path("/absolute"), Path("/escape")):
        assert not outside.exists(), outside
    assert list(aim.iterdir()) == []
    assert (root / "escape").read_text() == "x\n" and (root / "absolute").is_file()
    assert (root / "etc" / "abslink").is_symlink()          # kept as a link, never followed
    assert (root / "etc" / "hardpasswd").read_text() == PASSWD   # the image's own file
    assert stat.S_ISREG((root / "opt" / "mem").lstat().st_mode)
    assert (root / "opt" / "mem").stat().st_size == 0
    for name in ("suid", "sgid"):
        assert stat.S_IMODE((root / "opt" / name).stat().st_mode) & 0o6000 == 0


def test_docker_save_and_oci_archives(store: ImageStore, tmp_path: Path) -> None:
    saved = docker_archive(tmp_path / "saved.tar", [BASE, [Member("etc/v", data=b"1\n")]],
                           {"Env": ["FOO=docker"], "User": "1000:1000"})
    image = quiet_import(store, "saved", saved)
    assert (image.rootfs / "etc" / "v").read_text() == "1\n"
    assert (image.meta.env, image.meta.user, image.meta.workdir) == (
        {"FOO": "docker"}, "1000:1000", None)
    oci = layout(tmp_path / "src", BASE)
    archive = tmp_path / "image.oci.tar"
    with tarfile.open(archive, "w") as tar:
        for entry in oci.iterdir():
            tar.add(entry, arcname=entry.name)
    assert source_reference(archive) == f"oci-archive:{archive}"
    assert quiet_import(store, "archived", archive).rootfs.is_dir()


@pytest.mark.parametrize(("make", "message"), [
    (lambda p: p.mkdir(), "not an OCI image layout"),
    (lambda p: p.write_text("not a tar"), "not a readable tar archive"),
    (lambda p: None, "does not exist"),
])
def test_inputs_that_are_not_images(tmp_path: Path, make: object, message: str) -> None:
    path = tmp_path / "input"
    make(path)  # type: ignore[operator]
    with pytest.raises(ImageError, match=message):
        source_reference(path)
    with pytest.raises(ImageError, match="':'"):
        source_reference(tmp_path / "a:b")


@pytest.mark.parametrize(("run", "message"), [
    ({"User": "nobody"}, "user 'nobody' is not in the image's /etc/passwd"),
    ({"WorkingDir": "relative"}, "not absolute"),
])
def test_a_config_the_image_cannot_honour_is_refused(store: ImageStore, tmp_path: Path,
                                                     run: dict[str, object],
                                                     message: str) -> None:
    with pytest.raises(ImageError, match=message):
        quiet_import(store, "bad", layout(tmp_path / "src", BASE, run=run))
    assert store.list() == [] and list((store.root / "staging").iterdir()) == []


def test_a_foreign_architecture_is_refused(store: ImageStore, tmp_path: Path) -> None:
    oci = OciLayout(tmp_path / "src")
    oci.add(BASE)
    oci.config = lambda run: {**OciLayout.config(oci, run), "architecture": "s390x"}  # type: ignore[method-assign]
    with pytest.raises(ImageError, match="built for s390x"):
        quiet_import(store, "foreign", oci.write({}))
