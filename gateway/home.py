"""Where the data directory is, without building Settings: `sandgate run` against a running
gateway needs only its control socket, and pydantic's import alone costs a fast one-liner a
third of its time."""

from __future__ import annotations

import os
from pathlib import Path


def default_home() -> Path:
    """The data directory when SANDGATE_HOME is not set: the same wherever a command runs
    (a relative default would create a second, empty data dir in every working directory)."""
    if os.geteuid() == 0:
        return Path("/var/lib/sandgate")
    data = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data) / "sandgate"


def default_cache_dir() -> Path:
    if os.geteuid() == 0:
        return Path("/var/cache/sandgate")
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "sandgate"


def home_from_env() -> Path:
    """Settings().home, read as Settings reads it: SANDGATE_HOME in any case, else the
    default; made absolute."""
    chosen = next((value for name, value in os.environ.items()
                   if name.upper() == "SANDGATE_HOME"), None)
    return (Path(chosen) if chosen else default_home()).expanduser().resolve()


def control_socket() -> Path:
    """Settings().control_socket."""
    return home_from_env() / "control.sock"
