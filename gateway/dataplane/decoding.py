"""Content-Encoding undone as a stream, with a cap on what comes out.

The gateway decodes bodies to look inside them (placeholders going out, secrets coming back),
never mitmproxy's whole-body decoding: that has no size limit, and under 1 KB of brotli
decodes to 512 MiB. Here each step produces at most STEP bytes, the total is capped, and
going over the cap raises TooLarge at once (the bomb is never inflated). Handled: gzip
(several members too), deflate (zlib-wrapped or raw), br, zstd (several frames too),
identity, and stacked encodings (`gzip, br`); anything else raises UnknownEncoding.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from typing import Protocol

import brotli

try:   # the standard library's from Python 3.14, its backport before (mitmproxy's too)
    from compression import zstd  # type: ignore[import-not-found,unused-ignore]
except ImportError:
    from backports import zstd  # type: ignore[import-not-found,no-redef,unused-ignore]

STEP = 64 * 1024


class DecodeError(ValueError):
    """The body does not decode as its Content-Encoding says."""


class UnknownEncoding(DecodeError):
    pass


class TooLarge(DecodeError):
    def __init__(self, limit: int) -> None:
        super().__init__(f"decodes to more than {limit} bytes")
        self.limit = limit


class _Stage(Protocol):
    def feed(self, data: bytes) -> Iterator[bytes]: ...

    def end(self) -> Iterator[bytes]: ...


class _Identity:
    def feed(self, data: bytes) -> Iterator[bytes]:
        if data:
            yield data

    def end(self) -> Iterator[bytes]:
        return iter(())


class _Zlib:
    """gzip (wbits 47: gzip or zlib header) or deflate (zlib-wrapped, or raw when the first
    bytes are no zlib header). Data after the end of a member starts a new one: decoders
    disagree on whether a second gzip member counts, so the gateway reads them all."""

    def __init__(self, gzip: bool) -> None:
        self.gzip = gzip
        self._d: zlib._Decompress | None = None
        self._head = b""    # deflate: a member's first byte, until the second tells its kind

    def _new(self, data: bytes) -> zlib._Decompress:
        if self.gzip:
            return zlib.decompressobj(47)
        zlib_header = data[0] & 0x0F == 8 and (data[0] << 8 | data[1]) % 31 == 0
        return zlib.decompressobj(15 if zlib_header else -15)

    def feed(self, data: bytes) -> Iterator[bytes]:
        while data:
            if self._d is None:
                data, self._head = self._head + data, b""
                if not self.gzip and len(data) < 2:
                    self._head = data       # too short to tell zlib-wrapped from raw
                    return
                self._d = self._new(data)
            d = self._d
            try:
                while True:
                    out = d.decompress(data, STEP)
                    if out:
                        yield out
                    data = d.unconsumed_tail
                    if d.eof or (not data and len(out) < STEP):
                        break
            except zlib.error as e:
                kind = "gzip" if self.gzip else "deflate"
                raise DecodeError(f"not valid {kind}: {e}") from None
            data = d.unused_data if d.eof else b""
            if d.eof:
                self._d = None

    def end(self) -> Iterator[bytes]:
        if self._head or (self._d is not None and not self._d.eof):
            raise DecodeError("truncated body")
        return iter(())


class _Brotli:
    def __init__(self) -> None:
        self._d = brotli.Decompressor()

    def feed(self, data: bytes) -> Iterator[bytes]:
        try:
            out = self._d.process(data, output_buffer_limit=STEP)
            while out:
                yield out
                out = self._d.process(b"", output_buffer_limit=STEP)
        except brotli.error as e:
            raise DecodeError(f"not valid brotli: {e}") from None

    def end(self) -> Iterator[bytes]:
        if not self._d.is_finished():
            raise DecodeError("truncated brotli body")
        return iter(())


class _Zstd:
    def __init__(self) -> None:
        self._d = zstd.ZstdDecompressor()

    def feed(self, data: bytes) -> Iterator[bytes]:
        try:
            while data:
                out = self._d.decompress(data, max_length=STEP)
                if out:
                    yield out
                while not self._d.eof and not self._d.needs_input:
                    out = self._d.decompress(b"", max_length=STEP)
                    if out:
                        yield out
                data = self._d.unused_data if self._d.eof else b""
                if self._d.eof:
                    self._d = zstd.ZstdDecompressor()
        except zstd.ZstdError as e:
            raise DecodeError(f"not valid zstd: {e}") from None

    def end(self) -> Iterator[bytes]:
        return iter(())


def _stage(name: str) -> _Stage:
    if name in ("", "identity"):
        return _Identity()
    if name in ("gzip", "x-gzip"):
        return _Zlib(gzip=True)
    if name == "deflate":
        return _Zlib(gzip=False)
    if name == "br":
        return _Brotli()
    if name == "zstd":
        return _Zstd()
    raise UnknownEncoding(f"unknown content-encoding {name!r}")


class Decoder:
    """Feed encoded chunks, get decoded ones; at most `limit` bytes in all."""

    def __init__(self, content_encoding: str, limit: int) -> None:
        # applied in the order listed, so undone in reverse
        self.names = [n.strip().lower() for n in reversed(content_encoding.split(","))
                      if n.strip()]
        self._stages: list[_Stage] | None = None
        self.limit = limit
        self.total = 0
        self.fed = 0

    @property
    def stages(self) -> list[_Stage]:
        """Built on first use: an unknown encoding is refused when there is a body."""
        if self._stages is None:
            self._stages = [_stage(n) for n in self.names] or [_Identity()]
        return self._stages

    def feed(self, data: bytes) -> Iterator[bytes]:
        if not data:
            return
        self.fed += len(data)
        yield from self._through(0, data)

    def end(self) -> Iterator[bytes]:
        if not self.fed:
            return          # no body at all: nothing to end (an empty body decodes to empty)
        for index, stage in enumerate(self.stages):
            for out in stage.end():
                yield from self._through(index + 1, out)

    def _through(self, index: int, data: bytes) -> Iterator[bytes]:
        if index == len(self.stages):
            self.total += len(data)
            if self.total > self.limit:
                raise TooLarge(self.limit)
            yield data
            return
        for out in self.stages[index].feed(data):
            yield from self._through(index + 1, out)


def decode_all(content_encoding: str, data: bytes, limit: int) -> bytes:
    """A whole body decoded (still capped)."""
    decoder = Decoder(content_encoding, limit)
    return b"".join([*decoder.feed(data), *decoder.end()])
