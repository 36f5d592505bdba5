"""Built images: the package list, the recipe's id (what decides the content, and only
that), mmdebstrap's command line, and reuse of what the store has (no network)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from sandbox_net.errors import ImageError
from sandbox_net.images.build import (
    Recipe,
    build,
    command,
    parse_packages,
    sources_from_indextargets,
)
from sandbox_net.images.store import ImageMeta, ImageStore, now
from tests.images import tiny_rootfs

RECIPE = Recipe(("ca-certificates", "curl"), "bookworm",
                ("deb http://deb.debian.org/debian/ bookworm main",), "amd64", "mmdebstrap 1.3.5")
INDEXTARGETS = """\
http://deb.debian.org/debian/ bookworm main deb
http://deb.debian.org/debian/ bookworm contrib deb
http://deb.debian.org/debian/ bookworm main deb-src
http://deb.debian.org/debian-security/ bookworm-security main deb
https://deb.nodesource.com/node_20.x/ nodistro main deb
http://deb.debian.org/debian/ trixie main deb
"""


def test_package_lists_are_sorted_deduplicated_and_checked() -> None:
    assert parse_packages(" python3,curl,python3 , git ") == ("curl", "git", "python3")
    for bad in ("", "curl;rm -rf /", "Curl", "--option", "a,,-b"):
        with pytest.raises(ImageError, match="invalid package list"):
            parse_packages(bad)


@pytest.mark.parametrize("change", [
    {"packages": ("ca-certificates", "curl", "git")},
    {"suite": "trixie"},
    {"sources": ("deb http://mirror.example/debian bookworm main",)},
    {"arch": "arm64"},
    {"tool": "mmdebstrap 1.4.0"},
])
def test_the_id_changes_with_everything_that_decides_the_content(
        change: dict[str, object]) -> None:
    assert dataclasses.replace(RECIPE, **change).id != RECIPE.id  # type: ignore[arg-type]
    assert dataclasses.replace(RECIPE).id == RECIPE.id


def test_sources_are_the_suites_own_binary_mirrors() -> None:
    assert sources_from_indextargets(INDEXTARGETS, "bookworm") == (
        "deb http://deb.debian.org/debian-security/ bookworm-security main",
        "deb http://deb.debian.org/debian/ bookworm contrib main")


def test_the_command_installs_the_list_and_adds_the_user() -> None:
    argv = command(RECIPE, Path("/staging/rootfs"))
    assert argv[:4] == ["mmdebstrap", "--variant=apt", "--mode=root", "--format=directory"]
    assert "--include=ca-certificates,curl" in argv
    assert argv[-3:] == ["bookworm", "/staging/rootfs", RECIPE.sources[0]]
    hooks = [a for a in argv if a.startswith("--customize-hook=")]
    assert any("agent:x:1000:1000" in h for h in hooks)
    assert any("resolv.conf" in h for h in hooks)


def test_a_recipe_the_store_has_is_named_without_building(tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "images")
    meta = ImageMeta(source="packages", created=now(), size_bytes=1)
    # the store's content under the recipe's id: what a first build left
    store.commit("first", RECIPE.id, tiny_rootfs(tmp_path / "images" / "staging" / "t"), meta)
    image = build(store, "second", RECIPE)          # no mmdebstrap, no mirror
    assert image.id == RECIPE.id == store.get("first").id
