"""`sandgate image ...`: the images sandboxes run on, in the host's shared cache
(SANDGATE_CACHE_DIR/images). Built from the distribution's packages or imported from an OCI
image; see sandbox_net/images."""

from __future__ import annotations

import json
import os
from pathlib import Path

import click

from gateway.cli.common import fail, make_settings, print_table
from sandbox_net.errors import ImageError, ImageInUse, UnknownImage
from sandbox_net.images.store import LIST_HINT, ImageStore, check_name


def _store(need_root: bool = False) -> ImageStore:
    if need_root and os.geteuid() != 0:
        fail("this must run as root (the image store is the host's, and building or "
             "unpacking an image needs root)", "run it with sudo")
    return ImageStore(make_settings().images_dir)


def _size(size: int) -> str:
    return f"{size / 2**20:.0f} MiB"


@click.group("image")
def image_group() -> None:
    """Sandbox images: build from packages, import OCI images, list, inspect, remove."""


@image_group.command()
@click.argument("name")
@click.option("--packages", required=True, metavar="A,B,C",
              help="Debian packages to install, e.g. python3,curl,git,ca-certificates")
def build(name: str, packages: str) -> None:
    """Build image NAME from the distribution's packages (mmdebstrap, from the mirrors apt
    uses). The same package list on the same mirrors is built once and shared."""
    from sandbox_net.images import build as builder

    store = _store(need_root=True)
    try:
        check_name(name)
        recipe = builder.host_recipe(builder.parse_packages(packages))
        image = builder.build(store, name, recipe)
    except ImageError as e:
        fail(str(e))
    click.echo(f"image {name}: {image.id[:12]} ({_size(image.meta.size_bytes)}, "
               f"{','.join(image.meta.packages)})")


@image_group.command("import")
@click.argument("name")
@click.argument("path", type=click.Path(path_type=Path))
def import_(name: str, path: Path) -> None:
    """Import PATH as image NAME: an OCI image layout directory, an OCI archive, or a
    `docker save` / `podman save` archive. Its Env, WorkingDir and User apply."""
    from sandbox_net.images.oci import import_image

    store = _store(need_root=True)
    try:
        image = import_image(store, name, path)
    except ImageError as e:
        fail(str(e))
    click.echo(f"image {name}: {image.id[:12]} ({_size(image.meta.size_bytes)}, "
               f"from {path})")


@image_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="one JSON object per line")
def list_images(as_json: bool) -> None:
    """Images by name, id, source and size."""
    images = _store().list()
    if as_json:
        for image in images:
            click.echo(json.dumps(image.public()))
        return
    if not images:
        click.echo("no images (scripts/bootstrap.sh builds base)")
        return
    print_table([{"name": i.name, "id": i.id[:12], "source": i.meta.source,
                  "size": _size(i.meta.size_bytes), "created": i.meta.created,
                  "user": i.meta.user or "", "workdir": i.meta.workdir or ""} for i in images])


@image_group.command()
@click.argument("name")
def inspect(name: str) -> None:
    """Everything known about image NAME, as JSON."""
    try:
        image = _store().get(name)
    except UnknownImage:
        fail(f"unknown image {name!r}", LIST_HINT)
    click.echo(json.dumps({**image.public(), "rootfs": str(image.rootfs)}, indent=2))


@image_group.command()
@click.argument("name")
def rm(name: str) -> None:
    """Remove image NAME (refused while a sandbox runs on it)."""
    try:
        image = _store(need_root=True).remove(name)
    except UnknownImage:
        fail(f"unknown image {name!r}", LIST_HINT)
    except ImageInUse as e:
        fail(str(e))
    click.echo(f"removed image {name} ({image.id[:12]})")
