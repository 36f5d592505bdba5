"""A sandbox sees its image, never the host's filesystem: from inside gVisor and microVM
sandboxes, root-only files planted on the host, /etc/sandgate, the gateway's data dir and
SSH host keys are absent; commands do not run as root; nothing outside /tmp and /workspace
is writable. An imported OCI image (the base image's tree plus a layer that adds, whites out
and carries hostile members: `../..` and absolute paths, an absolute symlink out of the root,
a member written through a symlink, a hard link to /etc/shadow, a device node, a setuid file)
runs with its own Env, WorkingDir and User, and none of the hostile members escapes its root
on the host or appears as what it claims inside the sandbox.

One gateway with its data dir outside /tmp, one sandbox per runtime and image."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gateway.client import Client, Sandbox
from gateway.settings import Settings
from sandbox_net.images.store import ImageStore
from tests.conftest import force_clean, kill_runsc, new_prefix
from tests.harness import Gateway
from tests.images import Member, OciLayout, opaque, tree_layer, whiteout
from tests.topology import Topology

pytestmark = pytest.mark.integration

RUNTIMES = ("gvisor", "microvm")
# What the probes do not need of the base image, left out to keep the import quick
LEAVE_OUT = ("usr/share/locale", "usr/share/man", "usr/share/perl", "usr/lib/git-core",
             "usr/share/zoneinfo", "usr/share/i18n", "usr/lib/x86_64-linux-gnu/perl",
             "usr/lib/x86_64-linux-gnu/perl-base", "usr/share/perl5")
WRITE_PROBES = ("/", "/etc", "/usr/bin", "/var/tmp", "/opt", "/root", "/home/agent", "/srv",
                "/tmp", "/workspace")
PROBE = """
import errno, json, os, stat, sys
paths = json.loads(sys.argv[1])
out = {"uid": os.getuid(), "gid": os.getgid(), "cwd": os.getcwd(),
       "env": {k: os.environ.get(k) for k in ("FOO", "HOME", "SSL_CERT_FILE")},
       "exists": {p: os.path.lexists(p) for p in paths["absent"]}, "writes": {}, "files": {}}
for d in paths["writes"]:
    try:
        with open(os.path.join(d, "sgtest-write"), "w") as f:
            f.write("x")
        out["writes"][d] = "written"
    except OSError as e:
        out["writes"][d] = errno.errorcode[e.errno]
for p in paths["files"]:
    try:
        info = os.lstat(p)
        kind = "dir" if stat.S_ISDIR(info.st_mode) else "link" if stat.S_ISLNK(
            info.st_mode) else "file" if stat.S_ISREG(info.st_mode) else "special"
        entry = {"kind": kind, "mode": info.st_mode & 0o7777, "nlink": info.st_nlink}
        if kind == "link":
            entry["target"] = os.readlink(p)
        try:
            if kind == "dir":
                entry["content"] = sorted(os.listdir(p))
            else:
                with open(p, "rb") as f:
                    entry["content"] = f.read(200).decode(errors="replace")
        except OSError as e:
            entry["content"] = errno.errorcode[e.errno]
    except OSError as e:
        entry = {"kind": errno.errorcode[e.errno]}
    out["files"][p] = entry
print(json.dumps(out))
"""


@dataclass
class Plants:
    """Files on the host a sandbox must never see, and places hostile members aim at."""

    secret: Path            # mode 0600 in a 0700 directory under /etc
    etc_sandgate: Path      # /etc/sandgate/..., where a systemd install keeps its keys
    ssh_key: Path           # an SSH host key
    aim: Path               # an empty host directory a symlinked member aims into
    shadow_links: int       # /etc/shadow's link count before the import

    def absent(self, gw: Gateway) -> list[str]:
        return [str(self.secret), str(self.secret.parent), str(self.etc_sandgate),
                str(self.ssh_key), str(gw.home), str(gw.home / "ca" / "mitmproxy-ca.pem"),
                str(gw.home / "sandgate.db"), "/etc/sandgate"]


@pytest.fixture(scope="module")
def plants() -> Iterator[Plants]:
    prefix = new_prefix()
    secret_dir = Path(f"/etc/sgtest-{prefix}")
    secret_dir.mkdir(mode=0o700)
    secret = secret_dir / "root-only"
    secret.write_text("host secret\n")
    secret.chmod(0o600)
    made = [d for d in (Path("/etc/sandgate"), Path("/etc/ssh")) if not d.exists()]
    for directory in made:
        directory.mkdir(mode=0o700)
    etc_sandgate = Path(f"/etc/sandgate/sgtest-{prefix}.key")
    ssh_key = Path(f"/etc/ssh/ssh_host_sgtest{prefix}_key")
    for path in (etc_sandgate, ssh_key):
        path.write_text("host key\n")
        path.chmod(0o600)
    aim = Path(f"/var/tmp/sgtest-{prefix}-aim")   # not below /tmp: a sandbox's /tmp is its own
    aim.mkdir()
    try:
        yield Plants(secret, etc_sandgate, ssh_key, aim, os.stat("/etc/shadow").st_nlink)
    finally:
        shutil.rmtree(secret_dir, ignore_errors=True)
        shutil.rmtree(aim, ignore_errors=True)
        etc_sandgate.unlink(missing_ok=True)
        ssh_key.unlink(missing_ok=True)
        for directory in made:
            with contextlib.suppress(OSError):   # unless someone else put files there since
                directory.rmdir()


@pytest.fixture(scope="module")
def gw(topology: Topology) -> Iterator[Gateway]:
    # A data dir outside /tmp (every sandbox's /tmp is its own tmpfs anyway).
    prefix = new_prefix()
    home = Path(f"/opt/sandgate-test-{prefix}")
    gateway = Gateway(prefix, home, topology)
    try:
        gateway.start()
        yield gateway
    finally:
        gateway.stop(signal.SIGKILL)
        kill_runsc(home)
        force_clean(prefix)
        shutil.rmtree(home, ignore_errors=True)


def hostile_layer(plants: Plants, prefix: str, base: Path) -> list[Member]:
    passwd = (base / "etc" / "passwd").read_text() + "app:x:1234:1234::/srv/app:/bin/sh\n"
    group = (base / "etc" / "group").read_text() + "app:x:1234:\n"
    return [
        # what an image's second layer does: add, replace, delete, hide
        Member("srv", "dir", mode=0o755), Member("srv/app", "dir", mode=0o755),
        Member("srv/app/hello.txt", data=b"added by layer 2\n"),
        Member("etc/passwd", data=passwd.encode()), Member("etc/group", data=group.encode()),
        whiteout("etc/motd"),
        opaque("usr/share/doc"), Member("usr/share/doc/only-this", data=b"kept\n"),
        # what a hostile one does
        Member(f"../../sgtest-escape-{prefix}", data=b"escaped\n"),
        Member(f"/sgtest-absolute-{prefix}", data=b"absolute\n"),
        Member("etc/hostlink", "symlink", target=str(plants.secret)),
        # on the way to a CA bundle path the gateway fills: resolved inside the image too
        Member("etc/pki", "symlink", target="/"),
        Member("etc/uplink", "symlink", target="../../../../../../.." + str(plants.aim)),
        Member("etc/uplink/through", data=b"through a symlink\n"),
        Member("srv/app/hardshadow", "hardlink", target="/etc/shadow"),
        Member("srv/app/mem", "chardev", mode=0o666, device=(1, 1)),
        Member("srv/app/suid", data=b"#!/bin/sh\nid -u\n", mode=0o4755),
    ]


@pytest.fixture(scope="module")
def derived(plants: Plants, tmp_path_factory: pytest.TempPathFactory,
            gw: Gateway) -> Iterator[str]:
    """The base image's tree plus a hostile second layer, imported with `sandgate image
    import` (skopeo and umoci, as a user would)."""
    prefix, name = gw.prefix, f"sgtest-{gw.prefix}-derived"
    store = ImageStore(Settings().images_dir)
    base = store.get("base").rootfs
    work = tmp_path_factory.mktemp("oci")
    layout = OciLayout(work / "layout")
    layout.add_file(tree_layer(base, work / "base.tar", LEAVE_OUT))
    layout.add(hostile_layer(plants, prefix, base))
    layout.write({"Env": ["PATH=/usr/local/bin:/usr/bin:/bin", "FOO=from-image"],
                  "WorkingDir": "/srv/app", "User": "app", "Cmd": ["python3"]})
    result = gw.sandgate("image", "import", name, str(layout.path), timeout=600)
    assert result.returncode == 0, result.stderr
    try:
        yield name
    finally:
        gw.sandgate("image", "rm", name)


@pytest.fixture(scope="module")
def admin(gw: Gateway) -> Iterator[Client]:
    with gw.admin_client("images-security", {"none": "version: 1\nname: none\n"}) as client:
        yield client


@pytest.fixture(scope="module", params=RUNTIMES)
def base_sandbox(request: pytest.FixtureRequest, admin: Client) -> Iterator[Sandbox]:
    with admin.create(policy="none", runtime=request.param, ttl_seconds=900) as sandbox:
        yield sandbox


@pytest.fixture(scope="module", params=RUNTIMES)
def derived_sandbox(request: pytest.FixtureRequest, admin: Client,
                    derived: str) -> Iterator[Sandbox]:
    with admin.create(policy="none", runtime=request.param, image=derived,
                      ttl_seconds=900) as sandbox:
        yield sandbox


def probe(sandbox: Sandbox, absent: Sequence[str] = (),
          files: Sequence[str] = ()) -> dict[str, Any]:
    paths = {"absent": list(absent), "writes": list(WRITE_PROBES), "files": list(files)}
    result = sandbox.exec(["python3", "-c", PROBE, json.dumps(paths)], timeout=60)
    assert result.exit_code == 0, result.stderr
    seen: dict[str, Any] = json.loads(result.stdout)
    return seen


def test_the_host_is_not_there(base_sandbox: Sandbox, plants: Plants, gw: Gateway) -> None:
    seen = probe(base_sandbox, plants.absent(gw))
    assert seen["exists"] == dict.fromkeys(plants.absent(gw), False)
    assert (seen["uid"], seen["gid"], seen["cwd"]) == (1000, 1000, "/workspace")


def test_only_tmp_and_workspace_are_writable(base_sandbox: Sandbox) -> None:
    writes = probe(base_sandbox)["writes"]
    assert {d: w for d, w in writes.items() if w == "written"} == {
        "/tmp": "written", "/workspace": "written"}
    # gVisor: a read-only root; the microVM: a read-only overlay on a read-only device
    assert {w for d, w in writes.items() if w != "written"} <= {"EROFS", "EACCES", "ENOENT"}


def test_an_imported_image_runs_its_own_env_workdir_and_user(derived_sandbox: Sandbox) -> None:
    seen = probe(derived_sandbox, files=["/srv/app/hello.txt", "/etc/motd", "/usr/share/doc"])
    assert (seen["uid"], seen["gid"], seen["cwd"]) == (1234, 1234, "/srv/app")
    assert seen["env"]["FOO"] == "from-image"
    files = seen["files"]
    assert files["/srv/app/hello.txt"]["content"] == "added by layer 2\n"
    assert files["/etc/motd"]["kind"] == "ENOENT"                  # whited out
    assert files["/usr/share/doc"]["content"] == ["only-this"]     # opaque directory
    assert derived_sandbox.info["user"] == "1234:1234"


def test_hostile_members_stay_inside_and_are_neutralised(derived_sandbox: Sandbox,
                                                         plants: Plants, derived: str,
                                                         gw: Gateway) -> None:
    prefix = gw.prefix
    seen = probe(derived_sandbox, absent=[str(plants.aim / "through")], files=[
        "/etc/hostlink", "/etc/uplink/through", "/srv/app/hardshadow", "/srv/app/mem",
        "/srv/app/suid", f"/sgtest-escape-{prefix}", f"/sgtest-absolute-{prefix}",
        "/tls/certs/ca-bundle.crt"])
    files = seen["files"]
    # the absolute symlink resolves inside the image, where the host's file does not exist
    assert files["/etc/hostlink"]["kind"] == "link"
    assert files["/etc/hostlink"]["content"] == "ENOENT"
    assert files["/etc/uplink/through"]["content"] == "through a symlink\n"
    assert files["/tls/certs/ca-bundle.crt"]["content"].startswith("-----BEGIN CERTIFICATE")
    # the hard link is to the image's own shadow (unreadable to the sandbox's user)
    assert files["/srv/app/hardshadow"]["content"] == "EACCES"
    # the device node is not one (and reads nothing of the host's memory)
    assert files["/srv/app/mem"]["kind"] in ("file", "ENOENT")
    assert files["/srv/app/mem"].get("content", "") == ""
    assert files["/srv/app/suid"]["mode"] & 0o6000 == 0
    # `..` and `/` members landed inside the root
    assert files[f"/sgtest-escape-{prefix}"]["content"] == "escaped\n"
    assert files[f"/sgtest-absolute-{prefix}"]["content"] == "absolute\n"
    # and on the host: nothing outside the image's tree, no new link to /etc/shadow
    image = ImageStore(Settings().images_dir).get(derived)
    for outside in (image.path.parent / f"sgtest-escape-{prefix}",
                    image.path.parent.parent / f"sgtest-escape-{prefix}",
                    image.path.parent.parent / "staging" / f"sgtest-escape-{prefix}",
                    Path(f"/sgtest-absolute-{prefix}"), Path(f"/sgtest-escape-{prefix}")):
        assert not outside.exists(), outside
    assert list(plants.aim.iterdir()) == []
    assert os.stat("/etc/shadow").st_nlink == plants.shadow_links
    mem = image.rootfs / "srv" / "app" / "mem"
    assert not mem.exists() or stat.S_ISREG(mem.lstat().st_mode)
