"""Capped streaming decompression: bombs stop at the cap without being inflated, every
encoding (and stacked ones) round-trips in any chunking, broken bodies are refused."""

from __future__ import annotations

import gzip
import tracemalloc
import zlib

import brotli
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.dataplane.decoding import (
    DecodeError,
    Decoder,
    TooLarge,
    UnknownEncoding,
    decode_all,
    zstd,
)

MIB = 1024 * 1024


def encode(name: str, data: bytes) -> bytes:
    return {"gzip": gzip.compress, "deflate": zlib.compress,
            "br": lambda d: brotli.compress(d, quality=5), "zstd": zstd.compress,
            "identity": lambda d: d}[name](data)


@pytest.mark.parametrize("name", ["gzip", "deflate", "br", "zstd"])
def test_a_bomb_stops_at_the_cap_without_inflating(name: str) -> None:
    body = encode(name, b"\0" * 64 * MIB)
    assert len(body) < 100 * 1024                    # 64 MiB in under 100 KB on the wire
    decoder = Decoder(name, 1 * MIB)
    tracemalloc.start()
    try:
        with pytest.raises(TooLarge):
            for _chunk in decoder.feed(body):
                pass
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2 * MIB                            # a step at a time, never the whole
    assert decoder.total <= 1 * MIB + 256 * 1024     # stopped within a step of the cap


@settings(max_examples=60, deadline=None)
@given(name=st.sampled_from(["gzip", "deflate", "br", "zstd", "identity"]),
       data=st.binary(max_size=5000), cuts=st.lists(st.integers(0, 6000), max_size=6))
def test_any_chunking_gives_back_the_body(name: str, data: bytes, cuts: list[int]) -> None:
    body = encode(name, data)
    decoder = Decoder(name, 10 * MIB)
    out, last = b"", 0
    for cut in sorted({min(c, len(body)) for c in cuts}):
        out += b"".join(decoder.feed(body[last:cut]))
        last = cut
    out += b"".join([*decoder.feed(body[last:]), *decoder.end()])
    assert out == data


def test_several_gzip_members_and_zstd_frames_are_all_read() -> None:
    # decoders disagree on members after the first: a placeholder must not hide there
    assert decode_all("gzip", gzip.compress(b"first ") + gzip.compress(b"second"),
                      MIB) == b"first second"
    assert decode_all("zstd", zstd.compress(b"a") + zstd.compress(b"b"), MIB) == b"ab"


def test_raw_deflate_and_stacked_encodings() -> None:
    raw = zlib.compressobj(wbits=-15)
    body = raw.compress(b"raw deflate") + raw.flush()
    assert decode_all("deflate", body, MIB) == b"raw deflate"
    stacked = brotli.compress(gzip.compress(b"two layers"))
    assert decode_all("gzip, br", stacked, MIB) == b"two layers"


@pytest.mark.parametrize(("encoding", "body", "error"), [
    ("gzip", b"not gzip", DecodeError),
    ("br", b"\xff\xff\xff not brotli", DecodeError),
    ("zstd", b"not zstd at all", DecodeError),
    ("gzip", gzip.compress(b"x" * 1000, mtime=0)[:20], DecodeError),     # truncated
    ("x-custom", b"whatever", UnknownEncoding),
])
def test_what_does_not_decode_is_refused(encoding: str, body: bytes,
                                         error: type[Exception]) -> None:
    with pytest.raises(error):
        decode_all(encoding, body, MIB)


@pytest.mark.parametrize("raw", [False, True], ids=["zlib-wrapped", "raw"])
def test_deflate_whose_first_byte_comes_alone_is_still_told_apart(raw: bool) -> None:
    """Two bytes tell a zlib header from raw deflate: a first read of one byte must wait for
    the second (it was taken for raw deflate, and a zlib body refused). Found by hypothesis."""
    body = b"the body " * 50
    encoded = zlib.compress(body)[2:-4] if raw else zlib.compress(body)
    decoder = Decoder("deflate", 1 << 20)
    out = b"".join([*decoder.feed(encoded[:1]), *decoder.feed(encoded[1:]), *decoder.end()])
    assert out == body
    alone = Decoder("deflate", 1 << 20)
    assert list(alone.feed(encoded[:1])) == []
    with pytest.raises(DecodeError, match="truncated"):
        list(alone.end())
