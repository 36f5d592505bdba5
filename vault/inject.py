"""How each injection form writes a credential. Pure string functions; the gateway's
credentials addon applies them to requests."""

from __future__ import annotations

import base64
import binascii


def bearer(value: str) -> str:
    return f"Bearer {value}"


def fill(template: str, value: str) -> str:
    return template.replace("{value}", value)


def basic(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


def parse_basic(header: str) -> tuple[str, str] | None:
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, sep, password = base64.b64decode(token, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return (user, password) if sep else None
