"""The approval webhook: each new pending approval is POSTed as JSON to the configured URL,
signed so the receiver can tell it came from this gateway.

Signature: `X-Sandgate-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256>` over
`<t>.<body>` with the shared secret (the timestamp is signed too, so an old message cannot
be replayed as new). The body names the approval and its decision URLs: POST to them with a
bearer token of a role that may decide (docs/SERVICE.md)."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from typing import Any

import httpx

from gateway.approvals.models import ApprovalRecord

logger = logging.getLogger(__name__)

HEADER = "X-Sandgate-Signature"
TIMEOUT = 5.0


def signature(secret: str, body: bytes, at: int) -> str:
    mac = hmac.new(secret.encode(), f"{at}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={at},v1={mac}"


def verify(secret: str, body: bytes, header: str | bytes, now: float,
           tolerance: float = 300) -> bool:
    """What a receiver does (and the tests): the MAC matches and the time is recent. Compared
    as bytes: a header that is not ASCII is refused, never an error (compare_digest raises
    TypeError on a str holding non-ASCII)."""
    try:
        given = header if isinstance(header, bytes) else header.encode("ascii")
        fields = dict(part.split(b"=", 1) for part in given.split(b",") if b"=" in part)
        at = int(fields[b"t"].decode("ascii"))
    except (KeyError, ValueError):      # UnicodeError is a ValueError
        return False
    expected = signature(secret, body, at).encode()
    return hmac.compare_digest(expected, given) and abs(now - at) <= tolerance


class Webhook:
    def __init__(self, url: str, secret: str, public_url: str) -> None:
        self.url = url
        self.secret = secret
        self.public_url = public_url.rstrip("/")

    def message(self, record: ApprovalRecord) -> dict[str, Any]:
        base = f"{self.public_url}/v1/approvals/{record.id}"
        return {"event": "approval.pending", "approval": record.public(),
                "decision_url": {"allow": f"{base}/allow", "deny": f"{base}/deny"},
                "page": f"{self.public_url}/approvals"}

    async def send(self, record: ApprovalRecord) -> None:
        """One attempt, bounded in time; a failure is logged (the approval still waits in
        the API, the CLI and the page)."""
        body = json.dumps(self.message(record), separators=(",", ":")).encode()
        headers = {"content-type": "application/json",
                   HEADER: signature(self.secret, body, int(time.time()))}
        try:
            async with httpx.AsyncClient(timeout=TIMEOUT, trust_env=False) as client:
                response = await client.post(self.url, content=body, headers=headers)
            if response.status_code >= 300:
                logger.warning("approval webhook answered %d for approval %s",
                               response.status_code, record.id)
        except httpx.HTTPError as e:
            logger.warning("approval webhook failed for approval %s: %s", record.id, e)
