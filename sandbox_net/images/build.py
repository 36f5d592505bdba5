"""Images built on the host from the distribution's packages (`sandgate image build`).

mmdebstrap installs the listed packages from the mirrors `apt-get` uses into a directory,
with a fixed SOURCE_DATE_EPOCH. The image's id is a hash of everything that decides its
content (suite, mirrors, packages, architecture, mmdebstrap's version, this recipe), so the
same list on the same mirrors is built once and shared by every name that asks for it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TextIO

from sandbox_net.errors import ImageError
from sandbox_net.images import rootfs
from sandbox_net.images.store import Image, ImageMeta, ImageStore, check_name, now
from sandbox_net.images.users import DEFAULT_UID

RECIPE_VERSION = 1
EPOCH = "1700000000"
PACKAGE = re.compile(r"^[a-z0-9][a-z0-9+.-]+$")
WORKSPACE = "/workspace"
USER = "agent"
# Run inside mmdebstrap after the packages are in ("$1" is the new root). The gateway writes
# resolv.conf and hosts for each sandbox; `agent` is the unprivileged user sandboxes run as.
HOOKS = (
    'rm -f "$1/etc/resolv.conf" "$1/etc/hostname"',
    f'echo "{USER}:x:{DEFAULT_UID}:{DEFAULT_UID}:sandbox user:/home/{USER}:/bin/sh" '
    '>> "$1/etc/passwd"',
    f'echo "{USER}:x:{DEFAULT_UID}:" >> "$1/etc/group"',
    f'echo "{USER}:*:19000:0:99999:7:::" >> "$1/etc/shadow"',
    f'mkdir -p "$1/home/{USER}" "$1{WORKSPACE}" && chown {DEFAULT_UID}:{DEFAULT_UID} '
    f'"$1/home/{USER}"',
)


@dataclass(frozen=True)
class Recipe:
    packages: tuple[str, ...]
    suite: str
    sources: tuple[str, ...]      # one-line apt sources: "deb URI SUITE COMPONENT..."
    arch: str
    tool: str                     # mmdebstrap's version

    @property
    def id(self) -> str:
        document = {**asdict(self), "hooks": HOOKS, "epoch": EPOCH, "recipe": RECIPE_VERSION}
        return hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()


def parse_packages(text: str) -> tuple[str, ...]:
    names = sorted({p.strip() for p in text.split(",") if p.strip()})
    bad = [n for n in names if not PACKAGE.match(n)]
    if bad or not names:
        raise ImageError(f"invalid package list {text!r}: give Debian package names "
                         "separated by commas, e.g. python3,curl,git")
    return tuple(names)


def _output(*argv: str) -> str:
    try:
        result = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=60)
    except FileNotFoundError:
        raise ImageError(f"{argv[0]} not found; install it (scripts/bootstrap.sh does)") from None
    if result.returncode != 0:
        raise ImageError(f"{argv[0]} failed: {result.stderr.strip()[-300:]}")
    return result.stdout


def host_suite() -> str:
    for line in Path("/etc/os-release").read_text().splitlines():
        key, _, value = line.partition("=")
        if key == "VERSION_CODENAME" and value.strip('"'):
            return value.strip('"')
    raise ImageError("cannot tell this host's distribution release from /etc/os-release")


def apt_sources(suite: str) -> tuple[str, ...]:
    """The mirrors apt uses for `suite` (and its -updates and -security), as apt itself lists
    them; other repositories configured on the host are left out of images."""
    listing = _output("apt-get", "indextargets", "--format",
                      "$(REPO_URI) $(RELEASE) $(COMPONENT) $(TARGET_OF)")
    sources = sources_from_indextargets(listing, suite)
    if not sources:
        raise ImageError(f"apt has no mirror for {suite}; check /etc/apt/sources.list*")
    return sources


def sources_from_indextargets(listing: str, suite: str) -> tuple[str, ...]:
    """One-line sources ("deb URI RELEASE COMPONENT...") from `apt-get indextargets`."""
    wanted = {suite, f"{suite}-updates", f"{suite}-security"}
    components: dict[tuple[str, str], set[str]] = {}
    for line in listing.splitlines():
        fields = line.split()
        if len(fields) == 4 and fields[3] == "deb" and fields[1] in wanted:
            components.setdefault((fields[0], fields[1]), set()).add(fields[2])
    return tuple(f"deb {uri} {release} {' '.join(sorted(parts))}"
                 for (uri, release), parts in sorted(components.items()))


def host_recipe(packages: tuple[str, ...]) -> Recipe:
    suite = host_suite()
    return Recipe(tuple(sorted(set(packages))), suite, apt_sources(suite),
                  _output("dpkg", "--print-architecture").strip(),
                  _output("mmdebstrap", "--version").strip())


def command(recipe: Recipe, target: Path) -> list[str]:
    return ["mmdebstrap", "--variant=apt", "--mode=root", "--format=directory",
            f"--architectures={recipe.arch}",
            f"--include={','.join(recipe.packages)}",
            *(f"--customize-hook={hook}" for hook in HOOKS),
            recipe.suite, str(target), *recipe.sources]


def build(store: ImageStore, name: str, recipe: Recipe, *,
          progress: TextIO = sys.stderr) -> Image:
    """Build `recipe` (unless the store has it) and name it. mmdebstrap's own progress lines
    go to `progress`."""
    check_name(name)
    meta = ImageMeta(source="packages", created=now(), size_bytes=0, env={},
                     workdir=WORKSPACE, user=USER, packages=list(recipe.packages),
                     suite=recipe.suite)
    if store.has(recipe.id):
        return store.commit(name, recipe.id, None, meta)
    if shutil.which("mmdebstrap") is None:
        raise ImageError("mmdebstrap not found; install it (scripts/bootstrap.sh does)")
    with store.staging() as staging:
        tree = staging / "rootfs"
        result = subprocess.run(command(recipe, tree), stdin=subprocess.DEVNULL,
                                stdout=progress, stderr=progress, check=False,
                                env={**os.environ, "SOURCE_DATE_EPOCH": EPOCH})
        if result.returncode != 0:
            raise ImageError(f"mmdebstrap could not build image {name!r} (exit status "
                             f"{result.returncode}; see its output above)")
        rootfs.sanitise(tree)
        size, _ = rootfs.disk_usage(tree)
        return store.commit(name, recipe.id, tree, dataclasses.replace(meta, size_bytes=size))
