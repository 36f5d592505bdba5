"""A budget's units as a policy writes them: sizes (`10MiB`, `500kB`, `1048576`) and periods
(`30s`, `15m`, `1h`, `1d`). Pure parsers: they raise ValueError with the fix."""

from __future__ import annotations

import re
from typing import Any

_SIZE = re.compile(r"^\s*(\d+)\s*([KMGT]i?B|B)?\s*$", re.IGNORECASE)
_UNITS = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}
_PERIOD = re.compile(r"^\s*(\d+)\s*([smhd])\s*$")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
MAX_PERIOD = 31 * 86400     # a month: beyond that a budget is a quota, kept elsewhere


def parse_size(value: Any) -> int:
    """Bytes from an integer or `N[B|kB|KiB|MB|MiB|GB|GiB|TB|TiB]`."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a size; write it as 10MiB or 1048576")
    if isinstance(value, int):
        number, unit = value, "b"
    else:
        match = _SIZE.match(str(value))
        if match is None:
            raise ValueError(f"{value!r} is not a size; write it as 10MiB, 500kB or 1048576")
        number, unit = int(match[1]), (match[2] or "b").lower()
    if number < 1:
        raise ValueError(f"{value!r}: a budget of nothing denies everything; use a deny rule")
    return number * _UNITS[unit]


def parse_period(value: Any) -> int:
    """Seconds from `N[s|m|h|d]` (an integer is seconds)."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a period; write it as 1h, 15m or 1d")
    if isinstance(value, int):
        seconds = value
    else:
        match = _PERIOD.match(str(value))
        if match is None:
            raise ValueError(f"{value!r} is not a period; write it as 1h, 15m or 1d")
        seconds = int(match[1]) * _SECONDS[match[2]]
    if not 1 <= seconds <= MAX_PERIOD:
        raise ValueError(f"period {value!r} is out of range 1s-31d")
    return seconds


def show_size(size: int) -> str:
    """The largest binary unit that divides `size` (for messages and summaries)."""
    for unit in ("TiB", "GiB", "MiB", "KiB"):
        if size % _UNITS[unit.lower()] == 0:
            return f"{size // _UNITS[unit.lower()]}{unit}"
    return f"{size}B"


def show_period(seconds: int) -> str:
    for unit in ("d", "h", "m"):
        if seconds % _SECONDS[unit] == 0:
            return f"{seconds // _SECONDS[unit]}{unit}"
    return f"{seconds}s"
