"""`make up` builds the venv on an interpreter every user can run: the commands that need no
root (policy check/test, audit, secret, token) are run by ordinary users too. pyenv keeps
its builds under the owner's home (/root is mode 0700), so scripts/python.sh copies such a
build where every user can run it."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
AS_NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


def bash(script: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", "-c", f"source {REPO}/scripts/python.sh; {script}"],
                          capture_output=True, text=True, timeout=300,
                          env={"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/"),
                               **env})


@pytest.fixture
def shared_root() -> Iterator[Path]:
    """A directory every user can reach (pytest's own tmp dirs are mode 0700)."""
    root = Path(tempfile.mkdtemp(prefix="sandgate-python-"))
    root.chmod(0o755)
    try:
        yield root
    finally:
        shutil.rmtree(root)


def test_a_private_interpreter_is_copied_where_nobody_can_run_it(tmp_path: Path,
                                                                 shared_root: Path) -> None:
    found = bash("find_python").stdout.strip()
    assert found, "no Python >= 3.12 (scripts/bootstrap.sh says how to get one)"
    found = bash(f"'{found}' -c 'import sys; print(sys._base_executable)'").stdout.strip()
    original = found
    if bash(f"python_shared '{found}'").returncode == 0:
        # this host's Python is usable by all: make a private one, like pyenv's under /root
        private = tmp_path / "private"
        private.mkdir(mode=0o700)
        base = bash(f"'{found}' -c 'import sys; print(sys.base_prefix)'").stdout.strip()
        subprocess.run(["cp", "-a", base, str(private / "build")], check=True, timeout=300)
        original = str(private / "build" / "bin" / "python3")
    assert bash(f"python_shared '{original}'").returncode != 0

    copy = bash(f"share_python '{original}'", SANDGATE_PYTHON_ROOT=str(shared_root))
    assert copy.returncode == 0, copy.stderr
    interpreter = copy.stdout.strip()
    assert interpreter.startswith(str(shared_root))
    run = subprocess.run([*AS_NOBODY, interpreter, "-c",
                          "import sys, ssl, sqlite3, venv; print(sys.prefix)"],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == str(Path(interpreter).parent.parent)
    # a second run finds the copy and copies nothing
    again = bash(f"share_python '{original}'", SANDGATE_PYTHON_ROOT=str(shared_root))
    assert (again.stdout.strip(), again.stderr) == (interpreter, "")
