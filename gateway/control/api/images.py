"""/v1/images: the images sandboxes can run on (built and imported with `sandgate image`)."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel

from gateway.control.api.deps import Caller, need
from gateway.control.roles import Scope
from gateway.errors import NotFound
from sandbox_net.images.store import LIST_HINT, Image, ImageStore


class ImagePublic(BaseModel):
    name: str
    id: str
    source: str                  # packages | oci
    created: str
    size_bytes: int
    env: dict[str, str]
    workdir: str | None
    user: str | None
    cmd: list[str]
    packages: list[str]
    suite: str | None
    digest: str | None


def public(image: Image) -> ImagePublic:
    data = image.public()
    data.pop("origin", None)     # a path on the gateway host
    return ImagePublic(**data)


def router(images: ImageStore) -> APIRouter:
    api = APIRouter(prefix="/v1/images", tags=["images"])

    @api.get("")
    def list_images(caller: Caller) -> list[ImagePublic]:
        need(caller, Scope.SANDBOXES)
        return [public(image) for image in images.list()]

    @api.get("/{name}")
    def get_image(name: str, caller: Caller) -> ImagePublic:
        need(caller, Scope.SANDBOXES)
        image = images.find(name)
        if image is None:
            raise NotFound(f"unknown image {name!r}", LIST_HINT)
        return public(image)

    return api
