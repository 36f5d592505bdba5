"""The webhook's signature: over the timestamp and the body, checked in constant time, and
refused when stale."""

from __future__ import annotations

from gateway.approvals.webhook import signature, verify

BODY = b'{"event":"approval.pending"}'


def test_a_signed_body_verifies_and_any_change_does_not() -> None:
    header = signature("s3cret", BODY, 1_000)
    assert verify("s3cret", BODY, header, now=1_010)
    assert not verify("s3cret", BODY + b" ", header, now=1_010)
    assert not verify("other", BODY, header, now=1_010)
    assert not verify("s3cret", BODY, header.replace("t=1000", "t=1001"), now=1_010)


def test_a_stale_or_malformed_signature_is_refused() -> None:
    assert not verify("s3cret", BODY, signature("s3cret", BODY, 1_000), now=2_000)
    assert not verify("s3cret", BODY, "v1=abc", now=1_000)
    assert not verify("s3cret", BODY, "", now=1_000)


def test_a_header_that_is_not_ascii_is_refused_not_an_error() -> None:
    """A receiver gets the header as text; compare_digest on a str with non-ASCII raised
    TypeError (a 500 in the receiver, not a refusal)."""
    header = signature("s3cret", BODY, 1_000)
    assert not verify("s3cret", BODY, header[:-1] + "\u00e9", now=1_000)
    # Arabic-Indic digits: int() reads them as 1000
    mac = header.split("v1=")[1]
    assert not verify("s3cret", BODY, "t=\u0661\u0660\u0660\u0660,v1=" + mac, now=1_000)
    assert not verify("s3cret", BODY, header.encode() + b"\xff", now=1_000)
    assert verify("s3cret", BODY, header.encode(), now=1_000)
