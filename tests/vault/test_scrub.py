"""Scrubbing a real value out of what comes back, in each encoding, whole or in chunks."""

from __future__ import annotations

import base64
import binascii
import urllib.parse

from hypothesis import given, settings
from hypothesis import strategies as st

from vault.scrub import Scrubber, forms, scrub, swaps

REAL = "sk-live-0123456789abcdefghij/+=XY"
PLACEHOLDER = "sgp_" + "a" * 32
TABLE = swaps([(REAL, PLACEHOLDER)])


def leaked(data: bytes) -> bool:
    """Whether `data` still carries the real value in any form this module promises to
    catch, base64 at any alignment included."""
    if any(form in data for form in forms(REAL.encode()) if len(form) >= 8):
        return True
    text = data.decode("latin-1")
    for alphabet in (None, b"-_"):
        for shift in range(4):
            chunk = text[shift:]
            chunk = chunk[: len(chunk) - len(chunk) % 4]
            try:
                decoded = base64.b64decode(chunk, altchars=alphabet, validate=False)
            except (binascii.Error, ValueError):
                continue
            if REAL.encode() in decoded:
                return True
    return False


def test_every_form_is_replaced_by_the_same_form_of_the_placeholder() -> None:
    for real_form, placeholder_form in zip(forms(REAL.encode()), forms(PLACEHOLDER.encode()),
                                           strict=True):
        out = scrub(b"<<" + real_form + b">>", TABLE)
        assert out == b"<<" + placeholder_form + b">>"


def test_base64_at_each_alignment_inside_a_longer_text() -> None:
    for before in range(6):
        for after in range(4):
            encoded = base64.b64encode(b"p" * before + REAL.encode() + b"s" * after)
            for text in (encoded, encoded.replace(b"+", b"-").replace(b"/", b"_")):
                assert leaked(text) and not leaked(scrub(text, TABLE))


def test_the_encodings_an_upstream_might_echo() -> None:
    echoes = [REAL.encode(), REAL.encode().hex().encode(), REAL.encode().hex().upper().encode(),
              urllib.parse.quote(REAL, safe="").encode(),
              urllib.parse.quote_plus(REAL).encode(),
              "".join(f"%{b:02x}" for b in REAL.encode()).encode(),
              b'{"token": "' + REAL.encode() + b'"}']
    for echo in echoes:
        assert not leaked(scrub(echo, TABLE)), echo


def test_an_extra_form_such_as_the_header_as_injected() -> None:
    basic = "Basic " + base64.b64encode(f"user:{REAL}".encode()).decode()
    table = swaps([(REAL, PLACEHOLDER), (basic, "Basic sandgate-placeholder")])
    assert scrub(f"auth={basic}".encode(), table) == b"auth=Basic sandgate-placeholder"


@settings(max_examples=200, deadline=None)
@given(before=st.binary(max_size=300), after=st.binary(max_size=300),
       form=st.sampled_from([f for f in forms(REAL.encode()) if len(f) >= 8]),
       cuts=st.lists(st.integers(min_value=0, max_value=700), max_size=8))
def test_streaming_in_any_chunks_equals_scrubbing_the_whole(before: bytes, after: bytes,
                                                            form: bytes,
                                                            cuts: list[int]) -> None:
    body = before + form + after
    scrubber = Scrubber(TABLE)
    out, last = b"", 0
    for cut in sorted({min(c, len(body)) for c in cuts}):
        out += scrubber.feed(body[last:cut])
        last = cut
    out += scrubber.feed(body[last:]) + scrubber.finish()
    assert out == scrub(body, TABLE)
    assert form not in out
