"""A throw-away PostgreSQL server for tests: initdb in a temporary directory, listening on a
unix socket only, removed afterwards. Needs Debian's postgresql package (the set-up script
installs it)."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def _bin(tool: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{tool}"))
    if not found:
        raise RuntimeError(f"PostgreSQL's {tool} not found: apt-get install postgresql "
                           "(scripts/bootstrap.sh does)")
    return found[-1]


@contextmanager
def postgres_server() -> Iterator[str]:
    """Yield an SQLAlchemy URL of a fresh, empty database."""
    user = pwd.getpwnam("postgres")
    root = Path(tempfile.mkdtemp(prefix="sandgate-pg-"))
    data, sockets = root / "data", root / "run"
    sockets.mkdir()
    os.chown(root, user.pw_uid, user.pw_gid)
    os.chown(sockets, user.pw_uid, user.pw_gid)

    def as_postgres(*cmd: str) -> None:
        subprocess.run(["runuser", "-u", "postgres", "--", *cmd], check=True,
                       capture_output=True, timeout=120)

    try:
        as_postgres(_bin("initdb"), "-D", str(data), "-A", "trust", "-U", "postgres",
                    "--no-sync", "-E", "UTF8")
        as_postgres(_bin("pg_ctl"), "-D", str(data), "-w", "-l", str(root / "log"), "-o",
                    f"-c listen_addresses='' -c unix_socket_directories={sockets} "
                    "-c fsync=off -c max_connections=200", "start")
        as_postgres(_bin("createdb"), "-h", str(sockets), "-U", "postgres", "sandgate")
        yield f"postgresql+psycopg://postgres@/sandgate?host={sockets}"
    finally:
        if (data / "postmaster.pid").exists():
            subprocess.run(["runuser", "-u", "postgres", "--", _bin("pg_ctl"), "-D", str(data),
                            "-m", "immediate", "-w", "stop"], capture_output=True, timeout=60)
        shutil.rmtree(root, ignore_errors=True)
