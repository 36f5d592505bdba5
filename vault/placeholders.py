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


def find(text: str | bytes) -> set[str]:
    """Every placeholder-shaped token in `text`, also inside base64 (a placeholder encoded to
    slip past a plain search is still a placeholder)."""
    if isinstance(text, bytes):
        found = {m.decode() for m in PATTERN_BYTES.findall(text)}
        decoded_source = text
    else:
        found = set(PATTERN.findall(text))
        decoded_source = text.encode(errors="ignore")
    for chunk in re.findall(rb"[A-Za-z0-9+/_-]{44,}={0,2}", decoded_source):
        for shift in range(4):
            piece = chunk[shift:]
            piece = piece[: len(piece) - len(piece) % 4]
            try:
                decoded = base64.b64decode(piece.replace(b"-", b"+").replace(b"_", b"/"))
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
