"""Where images live: content-addressed trees under the host's shared cache, and names that
point at them.

    images/
      refs/NAME                 the id of the content NAME stands for
      content/ID/image.json     what the image is (ImageMeta)
      content/ID/rootfs/        the root a gVisor sandbox runs on (read-only)
      content/ID/root.ext4      the same tree as a filesystem image, for microVMs (on demand)
      content/ID/use.lock       shared-locked by every gateway process running a sandbox on it
      staging/                  builds and imports in progress
      store.lock                held while refs or content change

Several gateways and CLIs on one host share the store, so every change is a rename under
store.lock, and content is only removed when no process holds its use.lock.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from sandbox_net.errors import ImageError, ImageInUse, UnknownImage
from sandbox_net.images import disk

IMAGE_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
LIST_HINT = "see: sandgate image list"


def check_name(name: str) -> str:
    if not IMAGE_NAME.match(name):
        raise ImageError(f"invalid image name {name!r}: lower-case letters, digits, '.', '_' "
                         "and '-', at most 63, starting with a letter or digit")
    return name


@dataclass(frozen=True)
class ImageMeta:
    """What an image is and how its sandboxes run (image.json)."""

    source: str                          # "packages" | "oci"
    created: str
    size_bytes: int
    env: dict[str, str] = field(default_factory=dict)
    workdir: str | None = None           # default cwd; else /workspace
    user: str | None = None              # the image's own user; else uid 1000
    cmd: list[str] = field(default_factory=list)
    packages: list[str] = field(default_factory=list)
    suite: str | None = None
    origin: str | None = None            # the imported path
    digest: str | None = None            # OCI config digest

    @classmethod
    def from_json(cls, text: str) -> ImageMeta:
        data = json.loads(text)
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass(frozen=True)
class Image:
    name: str
    id: str
    meta: ImageMeta
    path: Path

    @property
    def rootfs(self) -> Path:
        return self.path / "rootfs"

    @property
    def disk(self) -> Path:
        return self.path / "root.ext4"

    def public(self) -> dict[str, Any]:
        return {"name": self.name, "id": self.id, **dataclasses.asdict(self.meta)}


class Hold:
    """A shared lock on an image's content while a sandbox runs on it."""

    def __init__(self, handle: IO[bytes]) -> None:
        self._handle: IO[bytes] | None = handle

    def release(self) -> None:
        if self._handle is not None:
            self._handle.close()   # closing drops the lock
            self._handle = None


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class ImageStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    @property
    def _refs(self) -> Path:
        return self.root / "refs"

    @property
    def _content(self) -> Path:
        return self.root / "content"

    def _ensure(self) -> None:
        for path in (self.root, self._refs, self._content, self.root / "staging"):
            path.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.root.chmod(0o700)   # image trees may hold files only their owners should read

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self._ensure()
        with open(self.root / "store.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    # reading
    def find(self, name: str) -> Image | None:
        if not IMAGE_NAME.match(name):
            return None
        try:
            image_id = (self._refs / name).read_text().strip()
            meta = ImageMeta.from_json((self._content / image_id / "image.json").read_text())
        except (OSError, ValueError, TypeError):
            return None
        return Image(name, image_id, meta, self._content / image_id)

    def by_id(self, name: str, image_id: str) -> Image | None:
        """The content `image_id` (which `name` stood for), while the store still has it."""
        if not image_id.isalnum():
            return None
        try:
            meta = ImageMeta.from_json((self._content / image_id / "image.json").read_text())
        except (OSError, ValueError, TypeError):
            return None
        return Image(name, image_id, meta, self._content / image_id)

    def get(self, name: str) -> Image:
        image = self.find(name)
        if image is None:
            raise UnknownImage(f"no image named {name!r}")
        return image

    def list(self) -> list[Image]:
        if not self._refs.is_dir():
            return []
        found = (self.find(p.name) for p in sorted(self._refs.iterdir()))
        return [image for image in found if image is not None]

    def has(self, image_id: str) -> bool:
        return (self._content / image_id / "image.json").is_file()

    # writing
    @contextlib.contextmanager
    def staging(self) -> Iterator[Path]:
        """A private directory for a build or import, removed afterwards."""
        self._ensure()
        path = Path(tempfile.mkdtemp(dir=self.root / "staging"))
        try:
            yield path
        finally:
            shutil.rmtree(path, ignore_errors=True)

    def commit(self, name: str, image_id: str, rootfs: Path | None, meta: ImageMeta) -> Image:
        """Name `image_id`, moving the staged `rootfs` in as its content unless the store has
        that content already (the same id is the same tree)."""
        check_name(name)
        with self._locked():
            target = self._content / image_id
            if not self.has(image_id):
                if rootfs is None:
                    raise ImageError(f"no content {image_id[:12]} in the image store")
                shutil.rmtree(target, ignore_errors=True)
                staged = rootfs.parent / f"content-{image_id[:12]}"
                staged.mkdir(mode=0o700)
                rootfs.rename(staged / "rootfs")
                (staged / "use.lock").touch()
                (staged / "image.json").write_text(json.dumps(dataclasses.asdict(meta),
                                                              indent=1))
                staged.rename(target)
            ref = self._refs / f".{name}.new"
            ref.write_text(image_id + "\n")
            ref.rename(self._refs / name)
            self._collect()   # what the name pointed at before, unless still in use
        return self.get(name)

    def remove(self, name: str) -> Image:
        """Drop the name, and its content unless another name points at it. Refused while a
        sandbox runs on it."""
        with self._locked():
            image = self.get(name)
            shared = any(i.id == image.id for i in self.list() if i.name != name)
            if not shared and not self._removable(image.path):
                raise ImageInUse(f"image {name!r} is in use by a running sandbox; "
                                 "delete that sandbox first")
            (self._refs / name).unlink()
            self._collect()
        return image

    def _removable(self, content: Path) -> bool:
        with open(content / "use.lock", "a") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False
        return True

    def _collect(self) -> None:
        """Remove content no name points at and no sandbox uses (under store.lock)."""
        named = {i.id for i in self.list()}
        for content in list(self._content.iterdir()):
            if content.name in named or not self._removable(content):
                continue
            doomed = self.root / "staging" / f"removed-{content.name[:12]}-{os.getpid()}"
            content.rename(doomed)
            shutil.rmtree(doomed, ignore_errors=True)

    # using
    def hold(self, image: Image) -> Hold:
        """Keep `image`'s content while a sandbox runs on it (see remove)."""
        try:
            handle = open(image.path / "use.lock", "rb")  # noqa: SIM115 - held until release
        except FileNotFoundError:
            raise UnknownImage(f"image {image.name!r} was removed") from None
        fcntl.flock(handle, fcntl.LOCK_SH)
        if not self.has(image.id):    # removed while we waited for the lock
            handle.close()
            raise UnknownImage(f"image {image.name!r} was removed")
        return Hold(handle)

    def ensure_disk(self, image: Image) -> Path:
        """The image as an ext4 filesystem (microVMs boot on it), built once per image."""
        return disk.ensure(image.rootfs, image.disk, image.id)
