"""`sandgate image` on a store of tiny images: list, inspect, and the one-line errors
(building and importing for real: tests/integration/test_images.py). In-process, through
click's test runner."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from gateway.cli.main import cli
from sandbox_net.images.store import ImageStore
from tests.images import add_image


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "cache"


def image(cache: Path, *args: str) -> Result:
    return CliRunner().invoke(cli, ["image", *args], env={
        "SANDGATE_CACHE_DIR": str(cache), "SANDGATE_HOME": str(cache.parent)})


def one_line_error(result: Result, *needles: str) -> None:
    assert result.exit_code == 2, (result.output, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sandgate: error: "), lines
    for needle in needles:
        assert needle in lines[0]


def test_list_and_inspect(cache: Path) -> None:
    assert image(cache, "list").output == "no images (scripts/bootstrap.sh builds base)\n"
    made = add_image(ImageStore(cache / "images"), "base", packages=["curl", "python3"])
    header, row = image(cache, "list").output.splitlines()
    assert header.split()[:4] == ["NAME", "ID", "SOURCE", "SIZE"]
    assert row.split()[:3] == ["base", made.id[:12], "packages"]
    assert json.loads(image(cache, "list", "--json").output)["packages"] == ["curl", "python3"]
    assert json.loads(image(cache, "inspect", "base").output)["rootfs"] == str(made.rootfs)


@pytest.mark.parametrize("args", [("inspect", "nope"), ("rm", "nope")])
def test_an_unknown_image_is_one_line(cache: Path, args: tuple[str, ...]) -> None:
    result = image(cache, *args)
    if args[0] == "rm" and os.geteuid() != 0:     # rm asks for root first
        one_line_error(result, "must run as root", "sudo")
    else:
        one_line_error(result, "unknown image 'nope'", "sandgate image list")


def test_bad_packages_and_names_are_one_line(cache: Path) -> None:
    if os.geteuid() != 0:
        one_line_error(image(cache, "build", "x", "--packages", "curl"), "must run as root")
        return
    for args, needle in ((("build", "x", "--packages", "curl;true"), "invalid package list"),
                         (("build", "Bad", "--packages", "curl"), "invalid image name"),
                         (("import", "x", str(cache / "missing")), "does not exist")):
        one_line_error(image(cache, *args), needle)
