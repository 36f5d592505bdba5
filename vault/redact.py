"""Redacted forms of request parts that may carry credentials, for logs and the audit log."""

from __future__ import annotations

import re
import urllib.parse

from vault.placeholders import PATTERN

REDACTED = "[redacted]"
# Parameter names that conventionally carry credentials.
_CREDENTIAL_NAMES = re.compile(
    r"(token|key|secret|password|passwd|pwd|auth|signature|sig|session|credential|code)",
    re.IGNORECASE)


def redact_query(raw_query: str, secret_values: tuple[str, ...] = ()) -> str:
    """The query with credential-like values, placeholders and known secret values replaced
    by [redacted]; names and structure kept."""
    if not raw_query:
        return ""
    parts = []
    for item in raw_query.split("&"):
        name, sep, value = item.partition("=")
        decoded = urllib.parse.unquote_plus(value)
        if sep and (_CREDENTIAL_NAMES.search(urllib.parse.unquote_plus(name))
                    or PATTERN.search(decoded) or any(s in decoded for s in secret_values if s)):
            value = REDACTED
        parts.append(f"{name}{sep}{value}")
    return "&".join(parts)
