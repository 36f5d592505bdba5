"""Images through the CLI and the API, with the session gateway (gVisor; the microVM's side
is in test_microvm.py and tests/security/test_images.py): the built-in base image and its
tools through the gateway, a rebuild that reuses the store's content without a mirror, a
`docker save` archive imported and run with its Env, WorkingDir and User, users, files
relative to /workspace, and one-line errors for an unknown image."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.client import Client, SandgateAPIError
from gateway.settings import Settings
from sandbox_net.images.store import ImageStore
from tests.harness import Gateway
from tests.images import Member, docker_archive
from tests.topology import HTTPS_IP, Topology

pytestmark = pytest.mark.integration

POLICY = """version: 1
name: images
rules:
  - id: secure
    hosts: [secure.upstream.test]
    ports: [443]
"""
URLLIB = """
import os, urllib.request
with urllib.request.urlopen("https://secure.upstream.test/from-base", timeout=20) as r:
    print(r.status, os.getcwd(), os.getuid(), os.environ["HOME"])
"""
BUSYBOX_APPLETS = ("sh", "sleep", "timeout", "id", "pwd", "cat", "mkdir", "wc", "ls")


@pytest.fixture(scope="module")
def admin(gateway: Gateway) -> Iterator[Client]:
    with gateway.admin_client("images", {"images": POLICY}) as client:
        yield client


@pytest.fixture(scope="module")
def busybox_image(gateway: Gateway, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A `docker save` archive of a busybox image, imported with `sandgate image import`."""
    busybox = shutil.which("busybox")
    assert busybox, "busybox-static is installed by scripts/bootstrap.sh"
    name = f"sgtest-{gateway.prefix}-busybox"
    layer = [Member("bin", "dir", mode=0o755),
             Member("bin/busybox", data=Path(busybox).read_bytes(), mode=0o755),
             *(Member(f"bin/{a}", "symlink", target="busybox") for a in BUSYBOX_APPLETS),
             Member("etc", "dir", mode=0o755),
             Member("etc/passwd", data=b"root:x:0:0::/root:/bin/sh\nbox:x:4321:4321::/:/bin/sh\n")]
    archive = docker_archive(tmp_path_factory.mktemp("saved") / "busybox.tar", [layer], {
        "Env": ["PATH=/bin", "FOO=from-docker-save"], "WorkingDir": "/app", "User": "box"})
    result = gateway.sandgate("image", "import", name, str(archive), timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"image {name}: ")
    yield name
    gateway.sandgate("image", "rm", name)


def test_base_is_listed_everywhere(gateway: Gateway, admin: Client) -> None:
    listed = gateway.sandgate("image", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    base = next(json.loads(line) for line in listed.stdout.splitlines()
                if json.loads(line)["name"] == "base")
    assert {"python3", "curl", "git", "ca-certificates"} <= set(base["packages"])
    assert (base["user"], base["workdir"]) == ("agent", "/workspace")
    assert [i["id"] for i in admin.images() if i["name"] == "base"] == [base["id"]]
    assert "origin" not in admin.images()[0]             # no host path over the API
    with pytest.raises(SandgateAPIError) as missing:
        admin.request("GET", "/v1/images/nope")
    assert missing.value.status == 404


def test_base_runs_python_through_the_gateway(gateway: Gateway, topology: Topology) -> None:
    mark = topology.mark()
    result = gateway.sandgate("run", "--image", "base", "--policy", "images", "--",
                              "python3", "-c", URLLIB)
    assert (result.returncode, result.stdout) == (0, "200 /workspace 1000 /tmp\n"), \
        result.stderr
    (seen,) = topology.events(mark, "http")
    assert (seen["path"], seen["local"]) == ("/from-base", [HTTPS_IP, 443])


def test_the_same_package_list_reuses_the_built_content(gateway: Gateway) -> None:
    """No mirror is reachable from a test run: only the store's content can answer."""
    name = f"sgtest-{gateway.prefix}-rebuilt"
    store = ImageStore(Settings().images_dir)
    packages = ",".join(reversed(store.get("base").meta.packages))
    result = gateway.sandgate("image", "build", name, "--packages", packages, timeout=60)
    assert result.returncode == 0, result.stderr
    assert store.get(name).id == store.get("base").id
    removed = gateway.sandgate("image", "rm", name)
    assert removed.returncode == 0, removed.stderr
    assert store.get("base").rootfs.is_dir()


def test_an_imported_docker_save_runs_its_own_config(gateway: Gateway,
                                                     busybox_image: str) -> None:
    result = gateway.sandgate("run", "--image", busybox_image, "--policy", "images", "--",
                              "sh", "-c", 'echo "$FOO $(pwd) $(id -u):$(id -g)"')
    assert (result.returncode, result.stdout) == (0, "from-docker-save /app 4321:4321\n"), \
        result.stderr


def test_users_files_and_an_image_in_use(gateway: Gateway, admin: Client,
                                         busybox_image: str) -> None:
    with admin.create(policy="images", image=busybox_image, user="root") as sandbox:
        assert sandbox.info["image"] == busybox_image and sandbox.info["user"] == "0:0"
        assert sandbox.exec(["id", "-u"]).stdout == "0\n"     # root only when asked for
        busy = gateway.sandgate("image", "rm", busybox_image)
        assert busy.returncode == 2 and "in use by a running sandbox" in busy.stderr
    with admin.create(policy="images") as sandbox:
        sandbox.upload("notes/today.txt", b"relative to /workspace\n")
        assert sandbox.exec(["cat", "/workspace/notes/today.txt"]).stdout == \
            "relative to /workspace\n"
        assert sandbox.download("notes/today.txt") == b"relative to /workspace\n"
        assert {"name": "today.txt", "type": "file", "size": 23} in sandbox.files("notes")
        assert sandbox.exec(["pwd"], cwd="/tmp").stdout == "/tmp\n"


def test_an_unknown_image_is_one_line_and_a_422(gateway: Gateway, admin: Client) -> None:
    result = gateway.sandgate("run", "--image", "nope", "--policy", "images", "--", "true")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        "sandgate: error: unknown image 'nope' (see: sandgate image list)"]
    with pytest.raises(SandgateAPIError) as refused:
        admin.create(policy="images", image="nope")
    assert (refused.value.status, refused.value.detail, refused.value.hint) == (
        422, "unknown image 'nope'", "see: sandgate image list")
