"""The query a request carries, read once for the addons that look at it."""

from __future__ import annotations

import pytest
from mitmproxy.test import tutils

from gateway.dataplane.injection import query_fields


@pytest.mark.parametrize("path", [
    b"/", b"/p", b"/p?", b"/p?a=1", b"/p?a=1&b=%20x&a=2", b"/p?a=1#frag", b"/p#x?y=1",
    b"/p?k=%3D%26&=v&flag",
])
def test_the_fields_mitmproxy_reads(path: bytes) -> None:
    request = tutils.treq(path=path)
    assert query_fields(request) == request.query.fields
