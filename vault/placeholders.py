"""Placeholders: random per-sandbox stand-ins for secrets, worthless anywhere else, and easy to
find in traffic (a fixed prefix, then 32 random characters)."""

from __future__ import annotations

import base64
import re
import secrets
import string
import threading
from collections.abc import Iterable
from dataclasses import dataclass

PREFIX = "sgp_"
_ALPHABET = string.ascii_lowercase + string.digits
PATTERN = re.compile(r"sgp_[a-z0-9]{32}")
PATTERN_BYTES = re.compile(rb"sgp_[a-z0-9]{32}")


def new_placeholder() -> str:
    return PREFIX + "".join(secrets.choice(_ALPHABET) for _ in range(32))


@dataclass(frozen=True, slots=True)
class Binding:
    sandbox_id: str
    secret: str


# "sgp_" base64-encoded at each of the three alignments it can have in a longer text: any
# base64 (standard or URL-safe) spelling of a placeholder contains one of these.
_BASE64_MARKERS = (b"c2dwX", b"NncF", b"zZ3Bf")
_BASE64_CHARS = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/-_")


def find(text: str | bytes) -> set[str]:
    """Every placeholder-shaped token in `text`, also inside base64 (a placeholder encoded to
    slip past a plain search is still a placeholder). Fast on data that holds none: a
    substring search first, the regular expression and decoding only where one may be."""
    data = text if isinstance(text, bytes) else text.encode(errors="ignore")
    found = {m.decode() for m in PATTERN_BYTES.findall(data)} if b"sgp_" in data else set()
    for marker in _BASE64_MARKERS:
        at = data.find(marker)
        while at >= 0:
            found |= _decoded_around(data, at)
            at = data.find(marker, at + 1)
    return found


def _decoded_around(data: bytes, at: int) -> set[str]:
    """Placeholders in the base64 run around position `at`, decoded at each offset."""
    start, end = at, at
    while start > max(0, at - 8) and data[start - 1] in _BASE64_CHARS:
        start -= 1
    while end < min(len(data), at + 72) and data[end] in _BASE64_CHARS:
        end += 1
    run = data[start:end].replace(b"-", b"+").replace(b"_", b"/")
    found: set[str] = set()
    for shift in range(4):
        piece = run[shift:]
        if len(piece) % 4 == 1:
            piece = piece[:-1]
        piece += b"=" * (-len(piece) % 4)     # the run's last bytes count too
        try:
            decoded = base64.b64decode(piece, validate=True)
        except ValueError:
            continue
        found |= {m.decode() for m in PATTERN_BYTES.findall(decoded)}
    return found


class PlaceholderIndex:
    """placeholder -> (sandbox, secret), shared by the gateway's threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._bindings: dict[str, Binding] = {}

    def bind(self, sandbox_id: str, placeholders: dict[str, str]) -> None:
        """`placeholders`: secret name -> placeholder."""
        with self._lock:
            for secret, placeholder in placeholders.items():
                self._bindings[placeholder] = Binding(sandbox_id, secret)

    def unbind(self, sandbox_id: str) -> None:
        with self._lock:
            self._bindings = {p: b for p, b in self._bindings.items()
                              if b.sandbox_id != sandbox_id}

    def lookup(self, placeholder: str) -> Binding | None:
        return self._bindings.get(placeholder)

    def lookup_all(self, placeholders: Iterable[str]) -> dict[str, Binding]:
        found = {}
        for placeholder in placeholders:
            binding = self._bindings.get(placeholder)
            if binding is not None:
                found[placeholder] = binding
        return found
