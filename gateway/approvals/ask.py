"""What a worker asks about, and what it is told: plain data for the hub protocol."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Scope(enum.StrEnum):
    """How far an allow reaches: this request; later identical requests of the sandbox
    (same scheme, host, port, method and path) until revoked; or, as a rule written into the
    policy, everyone on it for as long as the rule stays there."""

    ONCE = "once"
    SANDBOX = "sandbox"
    POLICY = "policy"


class Status(enum.StrEnum):
    PENDING = "pending"
    ALLOWED = "allowed"
    DENIED = "denied"
    EXPIRED = "expired"
    REVOKED = "revoked"     # a `--for sandbox` allow taken back


@dataclass(frozen=True, slots=True)
class Ask:
    """One held request, as the policy saw it (the path without its query), with what the
    person deciding should see of the rest: the query (credential-like values and
    placeholders redacted) and the body's announced length (None: not announced, a body of
    any length may follow)."""

    sandbox: str
    owner: str | None
    policy: str
    policy_version: str
    rule: str | None       # the ask rule, or None for `on_unmatched: ask`
    scheme: str
    host: str
    port: int
    method: str
    path: str
    query: str = ""
    body: int | None = 0


@dataclass(frozen=True, slots=True)
class Outcome:
    """The answer: allowed or not, by which approval and whom, and the audit reason
    (`approved`, `approval_denied`, `approval_timeout`)."""

    allowed: bool
    reason: str
    approval: int | None = None
    by: str | None = None
    scope: str | None = None
    detail: str | None = None

    def note(self) -> str:
        """For the held request's audit row."""
        if self.approval is None:
            return self.detail or self.reason
        who = f" by {self.by}" if self.by else ""
        return f"approval {self.approval} ({self.scope or self.reason}){who}"
