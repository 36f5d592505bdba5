"""User specs resolved in the image's own /etc/passwd and /etc/group."""

from __future__ import annotations

from pathlib import Path

import pytest

from sandbox_net.errors import ImageError
from sandbox_net.images.users import RunAs, resolve
from tests.images import tiny_rootfs

PASSWD = ("root:x:0:0:root:/root:/bin/sh\nagent:x:1000:1000::/home/agent:/bin/sh\n"
          "app:x:1234:50::/srv:/bin/sh\nbroken-line\n")
GROUP = "root:x:0:\nagent:x:1000:\nstaff:x:50:\n"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tiny_rootfs(tmp_path / "root", PASSWD, GROUP)


@pytest.mark.parametrize(("spec", "expected"), [
    ("agent", RunAs(1000, 1000)),
    ("app", RunAs(1234, 50)),            # its primary group from passwd
    ("root", RunAs(0, 0)),
    ("1234", RunAs(1234, 50)),           # a known number: its passwd entry's group
    ("4242", RunAs(4242, 4242)),         # an unknown number: never group 0 by accident
    ("agent:staff", RunAs(1000, 50)),
    ("1000:0", RunAs(1000, 0)),
    ("app:1000", RunAs(1234, 1000)),
])
def test_resolved(root: Path, spec: str, expected: RunAs) -> None:
    assert resolve(root, spec) == expected


@pytest.mark.parametrize(("spec", "message"), [
    ("nobody", "user 'nobody' is not in the image's /etc/passwd"),
    ("agent:wheel", "group 'wheel' is not in the image's /etc/group"),
    ("a b", "invalid user"),
    ("../x", "invalid user"),
    ("99999999999", "out of range"),
])
def test_refused(root: Path, spec: str, message: str) -> None:
    with pytest.raises(ImageError, match=message):
        resolve(root, spec)


def test_a_symlinked_passwd_is_not_followed(root: Path, tmp_path: Path) -> None:
    (tmp_path / "host-passwd").write_text("evil:x:0:0::/:/bin/sh\n")
    (root / "etc" / "passwd").unlink()
    (root / "etc" / "passwd").symlink_to(tmp_path / "host-passwd")
    with pytest.raises(ImageError, match="symlink"):
        resolve(root, "evil")
    assert resolve(root, "1000:1000") == RunAs(1000, 1000)   # numbers need no lookup
    assert resolve(root, "1000") == RunAs(1000, 1000)
