"""Request and response bodies, looked through without being held.

`Outgoing` (a request body): counts it against the sandbox's limit, decodes it as its
Content-Encoding says (capped: gateway.dataplane.decoding) and looks in the decoded bytes for
placeholders the body may not carry (a rolling window, so one split across chunks is still
found); the bytes forwarded are the sandbox's own, unchanged, except with a `body` injection,
where the decoded body goes out with the placeholder replaced.

`Incoming` (a response body): counts it, and when the request carried a real credential
decodes it and scrubs every form of the real value (vault.scrub), sending the decoded body.

Both work on a whole body (small bodies, buffered) or as mitmproxy stream callables (large
or chunked ones, never held): `feed(chunk) -> bytes`, `finish() -> bytes`. A rule broken
raises `Refusal`; the caller answers (buffered) or cuts the connection (streaming).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from gateway.dataplane.decoding import DecodeError, Decoder, TooLarge
from policies.decision import Reason
from vault import placeholders
from vault.placeholders import Binding
from vault.scrub import Scrubber

if TYPE_CHECKING:
    from mitmproxy import http
    from mitmproxy.http import Headers

def content_length(headers: Headers) -> int | None:
    """The Content-Length a message announces; None when it has none or one that is not a
    plain decimal number (ASCII only: `'²'.isdigit()` holds, and int() refuses it)."""
    value = headers.get("content-length", "")
    return int(value) if value.isascii() and value.isdigit() else None


def head_size(request: http.Request) -> int:
    """A request's line and headers as an HTTP/1.1 upstream receives them (`METHOD SP target
    SP HTTP/1.1 CRLF`, `name: value CRLF` each, the closing CRLF), plus an HTTP/2 request's
    `:authority`: what its head carries out, for byte budgets. HPACK's compression is not
    credited, and these are the headers the sandbox sent (an injected credential is the
    gateway's, in place of a placeholder of about its length)."""
    data = request.data
    line = len(data.method) + 1 + len(data.path) + len(b" HTTP/1.1\r\n")
    fields = sum(len(name) + len(value) + 4 for name, value in data.headers.fields)
    return line + fields + len(data.authority) + 2


SCAN_WINDOW = 1024 * 1024   # bodies up to this (by Content-Length) are buffered; the rest stream
# A SigV4 request signed over its body (no x-amz-content-sha256) must be held whole to be
# signed again: up to this, with its length given.
SIGNED_BODY_LIMIT = 32 * 1024 * 1024
OVERLAP = 128               # a placeholder (36) or its base64 (48) split across two chunks


class Refusal(Exception):
    def __init__(self, reason: Reason, error: str, leaks: tuple[Binding, ...] = ()) -> None:
        super().__init__(error)
        self.reason = reason
        self.error = error
        self.leaks = leaks


@dataclass
class Counts:
    """Body bytes as they crossed the gateway, for the audit row and byte limits."""

    up: int = 0
    down: int = 0


@dataclass
class Outgoing:
    limit: int
    content_encoding: str
    lookup: Callable[[set[str]], dict[str, Binding]]
    allowed: set[str] = field(default_factory=set)          # placeholders the body may hold
    substitute: Mapping[str, str] = field(default_factory=dict)  # placeholder -> real value
    counts: Counts = field(default_factory=Counts)

    def __post_init__(self) -> None:
        self._decoder = Decoder(self.content_encoding, self.limit)
        self._tail = b""

    def feed(self, chunk: bytes) -> bytes:
        self.counts.up += len(chunk)
        if self.counts.up > self.limit:
            raise Refusal(Reason.BODY_TOO_LARGE, f"request body over {self.limit} bytes")
        decoded = self._decode(chunk, end=False)
        out = self._scan(decoded, end=False)
        return out if self.substitute else chunk

    def finish(self) -> bytes:
        out = self._scan(self._decode(b"", end=True), end=True)
        return out if self.substitute else b""

    def _decode(self, chunk: bytes, end: bool) -> bytes:
        try:
            parts = [*self._decoder.feed(chunk), *(self._decoder.end() if end else ())]
        except TooLarge:
            raise Refusal(Reason.BODY_TOO_LARGE,
                          f"request body decodes to more than {self.limit} bytes") from None
        except DecodeError as e:
            raise Refusal(Reason.PROTOCOL_ERROR, f"request body: {e}") from None
        return b"".join(parts)

    def _scan(self, decoded: bytes, end: bool) -> bytes:
        window = self._tail + decoded
        found = self.lookup(placeholders.find(window))
        leaks = tuple(b for p, b in found.items() if p not in self.allowed)
        if leaks:
            raise Refusal(Reason.SECRET_EXFIL_ATTEMPT, "placeholder in the request body", leaks)
        cut = len(window) if end else _cut(window, len(window) - OVERLAP)
        ready, self._tail = window[:cut], window[cut:]
        return _replace(ready, self.substitute) if self.substitute else b""


def _cut(window: bytes, at: int) -> int:
    """Where to split `window` at or before `at` without cutting a placeholder in two."""
    if at <= 0:
        return 0
    for match in placeholders.PATTERN_BYTES.finditer(window, max(0, at - 40), at + 40):
        if match.start() < at < match.end():
            return match.start()
    return at


def _replace(data: bytes, table: Mapping[str, str]) -> bytes:
    for placeholder, real in table.items():
        data = data.replace(placeholder.encode(), real.encode())
    return data


@dataclass
class Incoming:
    limit: int | None
    content_encoding: str
    scrub: dict[bytes, bytes] | None        # real form -> placeholder form; None: no scrub
    counts: Counts = field(default_factory=Counts)

    def __post_init__(self) -> None:
        decode_limit = self.limit if self.limit is not None else 2**62
        self._decoder = Decoder(self.content_encoding, decode_limit) if self.scrub else None
        self._scrubber = Scrubber(self.scrub) if self.scrub else None

    def feed(self, chunk: bytes) -> bytes:
        self.counts.down += len(chunk)
        if self.limit is not None and self.counts.down > self.limit:
            raise Refusal(Reason.BODY_TOO_LARGE, f"response body over {self.limit} bytes")
        if self._decoder is None or self._scrubber is None:
            return chunk
        return self._scrubber.feed(self._decode(self._decoder.feed(chunk)))

    def finish(self) -> bytes:
        if self._decoder is None or self._scrubber is None:
            return b""
        return self._scrubber.feed(self._decode(self._decoder.end())) + self._scrubber.finish()

    @staticmethod
    def _decode(parts: Iterator[bytes]) -> bytes:
        try:
            return b"".join(parts)
        except DecodeError as e:
            raise Refusal(Reason.RESPONSE_UNSCANNABLE,
                          f"response body cannot be decoded to check it for secrets: {e}"
                          ) from None


def pieces(data: bytes) -> list[bytes]:
    """What a mitmproxy stream callable returns for `data`: never an empty piece. mitmproxy
    sends each piece as one HTTP/1 chunk of a chunked body, and an empty one is the chunk that
    ends the body: returning b"" for a chunk held back (or refused) would end the upload or
    response there, and the peer would take what it got as the whole body."""
    return [data] if data else []


def whole(body: Outgoing | Incoming, data: bytes) -> bytes:
    """A buffered body through the same checks."""
    return body.feed(data) + body.finish()
