"""An image's root filesystem, seen from the host.

An image is untrusted input: its `/etc/passwd` may be a symlink to the host's `/etc/shadow`,
its working directory may sit below a symlink to `/etc`. Every path inside an image is
therefore walked one component at a time from a directory descriptor, with O_NOFOLLOW, and
a symlink anywhere on the way is refused: the host never follows one of an image's links.
(Inside a sandbox the image's links resolve against the image's own root, which is fine.)
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

from sandbox_net.errors import ImageError

READ_LIMIT = 4 * 1024 * 1024
_DIR = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _parts(path: str) -> list[str]:
    parts = [p for p in PurePosixPath("/", path).parts[1:] if p != "."]
    if ".." in parts:
        raise ImageError(f"path {path!r} leaves the image's root")
    return parts


@contextlib.contextmanager
def _parent(root: Path, parts: list[str], create: bool = False) -> Iterator[int]:
    """A descriptor of the directory holding the last of `parts`, below `root`."""
    fd = os.open(root, _DIR)
    try:
        for part in parts[:-1]:
            try:
                step = os.open(part, _DIR, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    raise
                os.mkdir(part, 0o755, dir_fd=fd)
                step = os.open(part, _DIR, dir_fd=fd)
            os.close(fd)
            fd = step
        yield fd
    except NotADirectoryError:
        raise ImageError(f"{'/'.join(parts)}: a component is a symlink or not a directory "
                         "in the image; it is not followed") from None
    finally:
        os.close(fd)


def read_text(root: Path, path: str) -> str | None:
    """The content of the regular file `path` of the image, or None when it does not exist.
    Raises ImageError when the file or a directory on its way is a symlink."""
    parts = _parts(path)
    if not parts:
        raise ImageError("the image's root is not a file")
    try:
        with _parent(root, parts) as parent:
            fd = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                         dir_fd=parent)
    except FileNotFoundError:
        return None
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise ImageError(f"{path} is a symlink in the image; it is not followed") from None
        raise ImageError(f"cannot read {path} in the image: {e.strerror}") from None
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            raise ImageError(f"{path} is not a regular file in the image")
        return handle.read(READ_LIMIT).decode(errors="replace")


def is_dir(root: Path, path: str) -> bool:
    """Whether `path` is a directory of the image, reached without following a symlink."""
    parts = _parts(path)
    if not parts:
        return True
    try:
        with _parent(root, parts) as parent:
            os.close(os.open(parts[-1], _DIR, dir_fd=parent))
    except (OSError, ImageError):
        return False
    return True


def may_exist(root: Path, path: str) -> bool:
    """Whether `path` exists in the image as a file, directory or symlink, or may (a symlink
    on its way, not followed here, might lead to it inside the image)."""
    parts = _parts(path)
    if not parts:
        return True
    try:
        with _parent(root, parts) as parent:
            os.stat(parts[-1], dir_fd=parent, follow_symlinks=False)
    except ImageError:
        return True
    except OSError:
        return False
    return True


def make_dirs(root: Path, path: str) -> None:
    """Create `path` and its missing parents inside the image, refusing symlinks on the way."""
    parts = _parts(path)
    if not parts:
        return
    with _parent(root, [*parts, "."], create=True):
        pass


def sanitise(root: Path) -> None:
    """Take out of an image what must never reach a sandbox: setuid and setgid bits (a
    sandbox's user must not gain another's rights), and device nodes, FIFOs and sockets
    (a sandbox gets its own /dev). `find` never follows symlinks (-P, its default) and stays
    on one filesystem."""
    steps = (["-type", "f", "-perm", "/6000", "-exec", "chmod", "ug-s", "{}", "+"],
             ["(", "-type", "b", "-o", "-type", "c", "-o", "-type", "p", "-o", "-type", "s",
              ")", "-delete"])
    for step in steps:
        result = subprocess.run(["find", "-P", str(root), "-xdev", *step], capture_output=True,
                                text=True, check=False, timeout=600)
        if result.returncode != 0:
            raise ImageError(f"cleaning the image failed: {result.stderr.strip()[-300:]}")


def disk_usage(root: Path) -> tuple[int, int]:
    """(bytes in 4 KiB blocks, number of entries) of a tree, symlinks not followed."""
    total, count = 0, 0
    for directory, dirs, files in os.walk(root):
        for name in (*dirs, *files):
            info = os.lstat(os.path.join(directory, name))
            count += 1
            total += -(-info.st_size // 4096) * 4096 if stat.S_ISREG(info.st_mode) else 4096
    return total, count
