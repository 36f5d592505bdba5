"""The Content-Length every addon reads, parsed in one place."""

from __future__ import annotations

import pytest
from mitmproxy.http import Headers

from gateway.dataplane.bodies import content_length


@pytest.mark.parametrize(("given", "length"), [
    ("0", 0), ("1048576", 1048576), ("007", 7),
    ("", None), ("-1", None), (" 5", None), ("5 ", None), ("1e3", None), ("0x10", None),
    ("²", None), ("١٢", None),      # digits to str.isdigit(), not a length
])
def test_only_a_plain_decimal_is_a_length(given: str, length: int | None) -> None:
    assert content_length(Headers(content_length=given)) == length


def test_no_header_no_length() -> None:
    assert content_length(Headers(host="example.test")) is None
