"""Reading the audit log: filters, cursor pagination, summaries, and export formats (JSON
lines, CSV, OCSF-shaped events). Shared by the CLI, the API and the web view."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, or_
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from gateway.audit.models import FIELDS, AuditEvent

_RELATIVE = re.compile(r"^(\d+)([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_time(text: str) -> datetime:
    """ISO 8601 (UTC if no zone) or a duration back from now: 30s, 15m, 2h, 7d."""
    match = _RELATIVE.match(text.strip())
    if match:
        try:
            return datetime.now(UTC) - timedelta(**{_UNITS[match[2]]: int(match[1])})
        except OverflowError:
            raise ValueError(f"time {text!r} reaches back before the year 1; use a shorter "
                             "duration or an ISO 8601 date") from None
    try:
        value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"time {text!r}: use ISO 8601 (2026-11-26T10:00:00Z) or a duration "
                         "such as 15m, 2h, 7d") from None
    return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class AuditFilter:
    since: datetime | None = None
    until: datetime | None = None
    sandbox_id: str | None = None
    host: str | None = None          # exact, or a wildcard: *.example.com, api.*
    decision: str | None = None
    reason: str | None = None
    rule: str | None = None
    status: int | None = None
    secret: str | None = None
    mcp_tool: str | None = None      # MCP rows (a rule with mcp:) of this tool
    mcp_method: str | None = None    # ... of this JSON-RPC method
    owner: str | None = None         # only rows of sandboxes with this owner
    policy: str | None = None        # rows decided by this policy (by name)
    pod: str | None = None           # rows of this Kubernetes pod (namespace/name)
    after_id: int | None = None      # cursor: rows with a larger id
    limit: int = 100


def _like(pattern: str) -> str:
    escaped = pattern.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.replace("*", "%")


def _statement(f: AuditFilter) -> Any:
    stmt = select(AuditEvent)
    if f.since:
        stmt = stmt.where(AuditEvent.time >= f.since)
    if f.until:
        stmt = stmt.where(AuditEvent.time < f.until)
    if f.sandbox_id:
        stmt = stmt.where(AuditEvent.sandbox_id == f.sandbox_id)
    if f.host:
        host = f.host.lower().rstrip(".")
        stmt = stmt.where(col(AuditEvent.host).like(_like(host), escape="\\")
                          if "*" in host else AuditEvent.host == host)
    for column, value in ((AuditEvent.decision, f.decision), (AuditEvent.reason, f.reason),
                          (AuditEvent.rule, f.rule), (AuditEvent.status, f.status),
                          (AuditEvent.mcp_tool, f.mcp_tool),
                          (AuditEvent.mcp_method, f.mcp_method),
                          (AuditEvent.policy, f.policy), (AuditEvent.pod, f.pod)):
        if value is not None:
            stmt = stmt.where(column == value)
    if f.secret:
        # secrets holds comma-separated names
        name = _like(f.secret)
        names = col(AuditEvent.secrets)
        stmt = stmt.where(or_(names == f.secret,
                              names.like(f"{name},%", escape="\\"),
                              names.like(f"%,{name}", escape="\\"),
                              names.like(f"%,{name},%", escape="\\")))
    if f.owner is not None:
        stmt = stmt.where(AuditEvent.owner == f.owner)
    if f.after_id is not None:
        stmt = stmt.where(col(AuditEvent.id) > f.after_id)
    return stmt


def page(engine: Engine, f: AuditFilter) -> tuple[list[AuditEvent], int | None]:
    """Rows in id order after the cursor, and the cursor for the next page (None: no more)."""
    stmt = _statement(f).order_by(col(AuditEvent.id)).limit(f.limit + 1)
    with Session(engine) as session:
        rows = list(session.exec(stmt).all())
    more = len(rows) > f.limit
    rows = rows[: f.limit]
    return rows, (rows[-1].id if more and rows else None)


def latest(engine: Engine, f: AuditFilter) -> list[AuditEvent]:
    """The newest `limit` rows matching, oldest first (what `sandgate audit` shows)."""
    stmt = _statement(f).order_by(col(AuditEvent.id).desc()).limit(f.limit)
    with Session(engine) as session:
        rows = list(session.exec(stmt).all())
    rows.reverse()
    return rows


def iterate(engine: Engine, f: AuditFilter, batch: int = 1000) -> Iterator[AuditEvent]:
    """Every matching row, oldest first, in pages (for export)."""
    cursor = f.after_id
    while True:
        rows, cursor = page(engine, replace(f, after_id=cursor, limit=batch))
        yield from rows
        if cursor is None:
            return


def summary(engine: Engine, f: AuditFilter, top: int = 10) -> dict[str, list[dict[str, Any]]]:
    """Top denied hosts, and counts per sandbox and per rule, for rows matching `f`."""
    base = _statement(f).subquery()

    def grouped(column: str, where: Any = None) -> list[dict[str, Any]]:
        stmt = select(base.c[column], func.count().label("n")).group_by(base.c[column])
        if where is not None:
            stmt = stmt.where(where)
        stmt = stmt.order_by(func.count().desc()).limit(top)
        with Session(engine) as session:
            return [{column: value, "count": n} for value, n in session.exec(stmt).all()]

    return {
        "top_denied_hosts": grouped("host", base.c.decision == "deny"),
        "per_sandbox": grouped("sandbox_id"),
        "per_rule": grouped("rule"),
        "per_decision": grouped("decision"),
    }


def spent_since(engine: Engine, sandbox_id: str, rule: str | None,
                since: datetime) -> tuple[int, int]:
    """Request-body bytes and requests the log records as let out for the sandbox (by one
    rule, or by any) since `since`: what a budget had spent before the gateway's process that
    counts it started (gateway.processes.budgets). DNS answers and minted credentials are not
    requests."""
    stmt = select(func.coalesce(func.sum(AuditEvent.bytes_up), 0), func.count()).where(
        AuditEvent.sandbox_id == sandbox_id, col(AuditEvent.decision).in_(("allow", "would_deny")),
        col(AuditEvent.protocol).not_in(("dns", "token")), AuditEvent.time >= since)
    if rule is not None:
        stmt = stmt.where(AuditEvent.rule == rule)
    with Session(engine) as session:
        spent, count = session.exec(stmt).one()
    return int(spent), int(count)


def to_csv(rows: list[dict[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(FIELDS), extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


OCSF_VERSION = "1.1.0"
_OCSF_CLASS = {"http": (4002, "HTTP Activity"), "h2": (4002, "HTTP Activity"),
               "ws": (4002, "HTTP Activity"), "dns": (4003, "DNS Activity")}


def to_ocsf(row: dict[str, Any]) -> dict[str, Any]:
    """An OCSF-shaped event (Network, HTTP or DNS Activity) for one audit row."""
    class_uid, class_name = _OCSF_CLASS.get(row["protocol"], (4001, "Network Activity"))
    allowed = row["decision"] in ("allow", "would_deny")
    activity_id = 1 if class_uid == 4003 else (3 if class_uid == 4002 else 1)
    event: dict[str, Any] = {
        "category_uid": 4, "category_name": "Network Activity",
        "class_uid": class_uid, "class_name": class_name,
        "activity_id": activity_id, "type_uid": class_uid * 100 + activity_id,
        "time": int(datetime.fromisoformat(row["time"].rstrip("Z")).replace(tzinfo=UTC)
                    .timestamp() * 1000),
        "severity_id": 1 if allowed else 3,
        "status": "Success" if row["decision"] == "allow" else "Failure",
        "disposition": "Allowed" if allowed else "Blocked",
        "message": f"{row['decision']} {row['reason']}",
        "src_endpoint": {"uid": row["sandbox_id"]},
        "dst_endpoint": {"hostname": row["host"], "port": row["port"]},
        "policy": {"name": row["policy"], "uid": row["policy_version"],
                   "desc": row["rule"]},
        "metadata": {"version": OCSF_VERSION, "uid": f"{row['gateway_id']}:{row['seq']}",
                     "product": {"name": "sandgate", "vendor_name": "sandgate"},
                     "log_name": "egress"},
        "unmapped": {"reason": row["reason"], "secrets": row["secrets"],
                     "hash": row["hash"]},
    }
    if row.get("upstream"):
        event["dst_endpoint"]["ip"] = row["upstream"].rsplit(":", 1)[0]
    if class_uid == 4002:
        event["http_request"] = {"http_method": row["method"], "url": {
            "hostname": row["host"], "path": row["path"], "port": row["port"],
            "scheme": row["scheme"], "query_string": row["query"]}}
        if row["status"] is not None:
            event["http_response"] = {"code": row["status"]}
    elif class_uid == 4003:
        event["query"] = {"hostname": row["host"], "type": row["method"]}
    return event
