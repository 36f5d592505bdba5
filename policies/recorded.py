"""A recorded request: what `policy learn` and `policy replay` read of an audit row.

Built from the row's JSON form (`AuditEvent.as_json()`, `GET /v1/audit`), so this package
stays free of the database. Only rows that stand for a request or a stream the policy judged
are kept: DNS lookups (a request follows each one that matters), the gateway's own token
mints, and rows refused before any policy was asked (fronting, quarantine) are not.
"""

from __future__ import annotations

import ipaddress
import json
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from policies.decision import Reason
from policies.matcher import Request

# audit protocol -> the protocols a rule names (HTTP's depends on the scheme)
HTTP_ROWS = frozenset({"http", "h2", "ws"})
STREAM_ROWS = frozenset({"tcp", "tls"})
# Denials that are the policy's own judgement: another policy could decide them otherwise.
POLICY_DENIALS = frozenset({Reason.NO_MATCHING_RULE, Reason.DENIED_BY_RULE,
                            Reason.NOT_FROM_GATEWAY_DNS, Reason.PROTOCOL_MISMATCH})


@dataclass(frozen=True, slots=True)
class Recorded:
    """One request or stream as the audit log holds it. `passed`: the recording policy let it
    out (allowed, or `would_deny` in monitor mode, or allowed and then failed upstream)."""

    time: datetime
    passed: bool
    protocol: str                 # http | https | tcp | tls (a rule's words)
    host: str                     # a name, or an IPv4 address for an IP-literal dial
    port: int
    method: str | None = None
    path: str | None = None       # as the sandbox sent it (placeholders redacted)
    query: str | None = None      # redacted
    headers: tuple[str, ...] = ()  # "name" or "name: value" (values of harmless headers)
    secrets: tuple[str, ...] = ()  # names of secrets the recording rule injected
    policy: str | None = None
    rule: str | None = None
    reason: str = ""
    sandbox_id: str | None = None

    @property
    def is_http(self) -> bool:
        return self.protocol in ("http", "https")

    @property
    def address(self) -> ipaddress.IPv4Address | None:
        try:
            return ipaddress.IPv4Address(self.host)
        except ValueError:
            return None

    def request(self) -> Request:
        """The question the gateway asked the policy for this row. Header values the audit
        log does not keep are absent (a rule's `headers` condition sees them empty)."""
        address = self.address
        return Request(
            port=self.port, protocol=self.protocol,
            host=None if address is not None else self.host, address=address,
            method=self.method, path=self.path,
            query=_query(self.query), headers=_headers(self.headers))


def _query(text: str | None) -> Mapping[str, list[str]]:
    return urllib.parse.parse_qs(text or "", keep_blank_values=True)


def _headers(summary: tuple[str, ...]) -> Mapping[str, list[str]]:
    found: dict[str, list[str]] = {}
    for entry in summary:
        name, sep, value = entry.partition(": ")
        if sep:
            found.setdefault(name, []).append(value)
    return found


def _passed(row: Mapping[str, Any]) -> bool | None:
    """True: it went out; False: the policy refused it; None: not the policy's call."""
    decision, reason = row.get("decision"), row.get("reason")
    if decision in ("allow", "would_deny"):
        return True
    if decision == "error" and reason == Reason.UPSTREAM_ERROR:
        return True
    if decision == "deny" and reason in POLICY_DENIALS:
        return False
    return None


def _time(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value).rstrip("Z"))


def from_row(row: Mapping[str, Any]) -> Recorded | None:
    """The request an audit row records, or None for a row that records none the policy
    judged (DNS, token mints, structural refusals)."""
    protocol, host, port = row.get("protocol"), row.get("host"), row.get("port")
    if not host or not port:
        return None
    if protocol in HTTP_ROWS:
        protocol = "https" if row.get("scheme") in ("https", "wss") else "http"
    elif protocol not in STREAM_ROWS:
        return None
    passed = _passed(row)
    if passed is None:
        return None
    headers = tuple(json.loads(row["request_headers"])) if row.get("request_headers") else ()
    secrets = tuple(s for s in (row.get("secrets") or "").split(",") if s)
    return Recorded(
        time=_time(row["time"]), passed=passed, protocol=protocol, host=host,
        port=int(port), method=row.get("method"), path=row.get("path"),
        query=row.get("query"), headers=headers, secrets=secrets if passed else (),
        policy=row.get("policy"), rule=row.get("rule"), reason=row.get("reason") or "",
        sandbox_id=row.get("sandbox_id"))
