"""What an audit row keeps of an HTTP request: taken as the sandbox sent it, before any
credential is written into it, so the audit log never holds a secret; header values only for
a few harmless headers, query values redacted where they look like credentials."""

from __future__ import annotations

import json

from mitmproxy import http

from gateway.dataplane.state import Sent
from vault.placeholders import PATTERN
from vault.redact import REDACTED, redact_query

# Header values worth keeping; every other header is recorded by name only.
HEADER_VALUES_KEPT = frozenset({"content-type", "content-length", "content-encoding",
                                "user-agent", "accept", "server", "cache-control",
                                "x-sandgate-reason"})


def header_summary(headers: http.Headers) -> str:
    """JSON list of header names, with values (placeholders redacted) only for the kept
    ones."""
    return json.dumps([f"{name.lower()}: {PATTERN.sub(REDACTED, value)}"
                       if name.lower() in HEADER_VALUES_KEPT else name.lower()
                       for name, value in headers.items(multi=True)])


def sent(request: http.Request) -> Sent:
    path, _, query = request.path.partition("?")
    return Sent(PATTERN.sub(REDACTED, path[:2048]), redact_query(query) or None,
                header_summary(request.headers))
