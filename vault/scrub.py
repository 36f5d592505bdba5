"""Scrubbing: a real secret value coming back from an upstream is replaced by the sandbox's
placeholder before the sandbox sees it, in the common encodings an upstream might echo it in.

Forms caught, for each (real value, placeholder) pair:
- the value itself, and each extra form given (such as the whole header value as injected,
  `Basic dXNlcjpwYXNz...`);
- base64, standard and URL-safe alphabets, at the three alignments the value can have inside
  a longer base64 text (the part of the encoding made of the value's bytes alone);
- hex, lower and upper case;
- percent-encoding: minimal (`quote`), and every byte as `%XX` (upper and lower case).

`Scrubber` does it on a stream: it keeps back the last (longest form - 1) bytes of what it
has seen, so a form split across two chunks is still caught, and never needs the whole body.
An upstream that transforms a value arbitrarily (spaces between characters, reversed,
encrypted) is out of reach: docs/SECURITY.md.
"""

from __future__ import annotations

import base64
import urllib.parse
from collections.abc import Iterable

MIN_FORM = 8   # shorter encoded fragments would match ordinary text


def _base64_cores(value: bytes) -> list[bytes]:
    """The base64 text that encodes `value`'s bytes at each alignment, both alphabets."""
    cores = []
    for shift in range(3):
        encoded = base64.b64encode(b"\0" * shift + value)
        start = 4 if shift else 0                      # the group mixing padding and value
        end = 4 * ((shift + len(value)) // 3)          # the last group the value fills
        core = encoded[start:end]
        cores += [core, core.replace(b"+", b"-").replace(b"/", b"_")]
    return cores


def forms(value: bytes) -> list[bytes]:
    """Every spelling of `value` this module catches, in a fixed order (so that the forms
    of a value and of its placeholder line up)."""
    hexed = value.hex().encode()
    every_byte = "".join(f"%{b:02X}" for b in value).encode()
    return [value, *_base64_cores(value), hexed, hexed.upper(),
            urllib.parse.quote(value, safe="").encode(), every_byte, every_byte.lower()]


def swaps(pairs: Iterable[tuple[str, str]]) -> dict[bytes, bytes]:
    """Form of a real value -> the same form of its placeholder, longest first."""
    table: dict[bytes, bytes] = {}
    for real, placeholder in pairs:
        for real_form, placeholder_form in zip(forms(real.encode()),
                                               forms(placeholder.encode()), strict=True):
            if len(real_form) >= MIN_FORM and real_form not in table:
                table[real_form] = placeholder_form
    return dict(sorted(table.items(), key=lambda item: -len(item[0])))


def scrub(data: bytes, table: dict[bytes, bytes]) -> bytes:
    for real, placeholder in table.items():
        if real in data:
            data = data.replace(real, placeholder)
    return data


class Scrubber:
    """The rolling scrub of one body: feed chunks, then finish."""

    def __init__(self, table: dict[bytes, bytes]) -> None:
        self.table = table
        self.keep = max((len(k) for k in table), default=1) - 1
        self._tail = b""

    def feed(self, chunk: bytes) -> bytes:
        data = scrub(self._tail + chunk, self.table)
        if len(data) <= self.keep:
            self._tail = data
            return b""
        cut = len(data) - self.keep
        self._tail = data[cut:]
        return data[:cut]

    def finish(self) -> bytes:
        rest, self._tail = scrub(self._tail, self.table), b""
        return rest
