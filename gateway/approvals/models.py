"""The `approval` table: every held request, pending or decided, shared by every gateway on
the database (a decision made through any gateway's API is seen by the one holding it)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlmodel import Field, SQLModel

from gateway.clock import utcnow


class ApprovalRecord(SQLModel, table=True):
    __tablename__ = "approval"

    id: int | None = Field(default=None, primary_key=True)
    created_at: datetime = Field(default_factory=utcnow)
    expires_at: datetime
    gateway_id: str
    sandbox_id: str = Field(index=True)
    owner: str | None = None
    policy: str
    policy_version: str
    rule: str | None = None
    scheme: str
    host: str
    port: int
    method: str
    path: str
    query: str | None = None                # redacted, as the audit log keeps it
    body_bytes: int | None = None           # announced length; None: not announced
    status: str = Field(index=True)         # pending | allowed | denied | expired | revoked
    scope: str | None = None                # once | sandbox | policy (when allowed)
    decided_by: str | None = None           # the API caller: token name and id
    decided_at: datetime | None = None
    revision: int | None = None             # `--for policy`: the policy revision written
    policy_rule: str | None = None          # `--for policy`: the rule id written
    revoked_by: str | None = None           # who took a `--for sandbox` allow back
    revoked_at: datetime | None = None

    def public(self) -> dict[str, Any]:
        data = self.model_dump()
        for name in ("created_at", "expires_at", "decided_at", "revoked_at"):
            if data[name] is not None:
                data[name] = data[name].isoformat()
        return data
