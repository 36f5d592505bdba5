"""A pod's namespace is opened once and checked to be the one its runtime gave (by st_dev and
st_ino): a path that names another namespace in the gateway's view is refused, and every step
acts on the open file, whatever happens to the path meanwhile. Root-free: the identity check
and the held file do not need a namespace of their own."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sandbox_net.errors import NetError
from sandbox_net.links import NetnsRef, opened


def ref(path: Path | str) -> NetnsRef:
    found = os.stat(path)
    return NetnsRef(str(path), found.st_dev, found.st_ino)


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def test_the_namespace_the_runtime_gave_is_held_open() -> None:
    given = ref("/proc/self/ns/net")
    with opened(given) as held:
        assert held.startswith("/proc/self/fd/")
        assert (os.stat(held).st_dev, os.stat(held).st_ino) == (given.dev, given.ino)


def test_another_namespace_at_the_path_is_refused(tmp_path: Path) -> None:
    """What a /proc/PID path read in another PID namespace, or a name made again, gives."""
    before = open_fds()
    own = ref("/proc/self/ns/net")
    for wrong in (NetnsRef(own.path, own.dev, own.ino + 1),
                  NetnsRef(own.path, own.dev + 1, own.ino)):
        with pytest.raises(NetError, match="is not the namespace the container runtime gave"), \
                opened(wrong):
            pytest.fail("a namespace other than the runtime's was used")
    with pytest.raises(NetError, match="no network namespace at"), \
            opened(NetnsRef(str(tmp_path / "gone"), own.dev, own.ino)):
        pytest.fail("a missing path was used")
    with pytest.raises(NetError, match="no network namespace at 'relative'"), \
            opened(NetnsRef("relative", own.dev, own.ino)):
        pytest.fail("a relative path was used")
    assert open_fds() == before   # nothing left open


def test_every_step_acts_on_the_file_first_opened(tmp_path: Path) -> None:
    """The path is swapped for another file after the check: what is held stays the first."""
    path, other = tmp_path / "ns", tmp_path / "other"
    path.write_text("first")
    other.write_text("second")
    given = ref(path)
    before = open_fds()
    with opened(given) as held:
        os.replace(other, path)   # the name now means something else
        assert Path(held).read_text() == "first"
        assert os.stat(held).st_ino == given.ino != os.stat(path).st_ino
    assert open_fds() == before
