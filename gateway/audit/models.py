"""The audit log's tables and the canonical form of a row (what its hash covers)."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any

from sqlmodel import Field, SQLModel

from gateway.clock import utcnow

FIELDS = ("id", "time", "gateway_id", "seq", "sandbox_id", "owner", "policy",
          "policy_version", "rule", "decision", "reason", "protocol", "method", "scheme",
          "host", "port", "path", "query", "request_headers", "response_headers", "status",
          "bytes_up", "bytes_down", "duration_ms", "upstream", "sni", "secrets", "error",
          "dropped", "mcp_method", "mcp_tool", "actor", "pod", "pod_uid", "prev_hash", "hash")
CHAINED = tuple(f for f in FIELDS if f not in ("id", "hash"))
# Columns added after rows were chained: hashed only when set, so older rows keep their hash.
LATER = frozenset({"dropped", "mcp_method", "mcp_tool", "actor", "pod", "pod_uid"})
GENESIS = "0" * 64

class AuditEvent(SQLModel, table=True):
    __tablename__ = "audit_event"

    id: int | None = Field(default=None, primary_key=True)
    time: datetime = Field(default_factory=utcnow, index=True)
    gateway_id: str | None = None
    seq: int | None = None
    sandbox_id: str | None = Field(default=None, index=True)
    owner: str | None = None
    policy: str | None = None
    policy_version: str | None = None
    rule: str | None = None
    decision: str = Field(index=True)
    reason: str
    protocol: str
    method: str | None = None
    scheme: str | None = None
    host: str | None = Field(default=None, index=True)
    port: int | None = None
    path: str | None = None
    query: str | None = None            # redacted: no secret or placeholder values
    request_headers: str | None = None  # JSON list: names, values only where allow-listed
    response_headers: str | None = None
    status: int | None = None
    bytes_up: int = 0
    bytes_down: int = 0
    duration_ms: float | None = None
    upstream: str | None = None
    sni: str | None = None
    secrets: str | None = None          # names (never values) of secrets injected or caught
    error: str | None = None
    dropped: int | None = None          # a dropped_by_throttle row: how many it stands for
    mcp_method: str | None = Field(default=None, index=True)   # JSON-RPC method (rule with mcp:)
    mcp_tool: str | None = Field(default=None, index=True)     # the tool of a tools/call
    actor: str | None = None            # who made the decision (an approval): token name, id
    pod: str | None = Field(default=None, index=True)   # namespace/name of a Kubernetes pod
    pod_uid: str | None = None
    prev_hash: str | None = None
    hash: str | None = None

    def as_json(self) -> dict[str, Any]:
        data = {name: getattr(self, name) for name in FIELDS}
        data["time"] = time_text(self.time) + "Z"
        return data


class AuditHead(SQLModel, table=True):
    """A signed chain head (third-party verifiable) or a retention checkpoint (where the
    chain resumes after old rows were deleted on purpose)."""

    __tablename__ = "audit_head"

    id: int | None = Field(default=None, primary_key=True)
    gateway_id: str = Field(index=True)
    kind: str                 # signed | checkpoint
    seq: int
    hash: str
    signature: str | None = None
    created_at: datetime = Field(default_factory=utcnow)


def time_text(value: datetime) -> str:
    """UTC, microseconds, no zone suffix: the same text whatever the database returns."""
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return value.isoformat(timespec="microseconds")


def _canonical(row: dict[str, Any]) -> bytes:
    data = {name: row.get(name) for name in CHAINED
            if name not in LATER or row.get(name) is not None}
    data["time"] = time_text(data["time"]) if isinstance(data["time"], datetime) else data["time"]
    return json.dumps(data, sort_keys=True, separators=(",", ":")).encode()


def row_hash(row: dict[str, Any]) -> str:
    """The hash of a row: over every field but id and hash, prev_hash included."""
    return hashlib.sha256(_canonical(row)).hexdigest()


# column -> value when not given (id is assigned by the database)
COLUMNS: dict[str, Any] = {name: None for name in FIELDS if name != "id"}
COLUMNS.update(bytes_up=0, bytes_down=0)
