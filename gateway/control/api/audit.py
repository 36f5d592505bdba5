"""/v1/audit: the audit log, whole (auditor, security) or one's own sandboxes' (operator)."""

from dataclasses import replace
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.engine import Engine
from starlette.concurrency import run_in_threadpool

from gateway.audit.overview import overview
from gateway.audit.query import AuditFilter, latest, page, parse_time, summary
from gateway.audit.writer import AuditWriter
from gateway.control.api.deps import Caller, need
from gateway.control.roles import Principal, Scope
from gateway.errors import BadRequest


class AuditParams(BaseModel):
    """Filters and cursor of GET /v1/audit."""

    model_config = ConfigDict(extra="forbid")

    since: str | None = None
    until: str | None = None
    sandbox: str | None = None
    host: str | None = None
    decision: Literal["allow", "deny", "would_deny", "error"] | None = None
    reason: str | None = None
    rule: str | None = None
    status: int | None = None
    secret: str | None = None
    mcp_tool: str | None = None
    mcp_method: str | None = None
    policy: str | None = None
    pod: str | None = Field(default=None, description="a Kubernetes pod, namespace/name")
    cursor: int | None = Field(default=None, description="next_cursor of the previous page")
    limit: int = Field(default=100, ge=1, le=10000)
    latest: bool = Field(default=False, description="the newest `limit` rows (oldest first); "
                                                    "next_cursor is then the newest id, to poll")

    def to_filter(self) -> AuditFilter:
        try:
            since = parse_time(self.since) if self.since else None
            until = parse_time(self.until) if self.until else None
        except ValueError as e:
            raise BadRequest(str(e)) from e
        return AuditFilter(since=since, until=until, sandbox_id=self.sandbox, host=self.host,
                           decision=self.decision, reason=self.reason, rule=self.rule,
                           status=self.status, secret=self.secret, mcp_tool=self.mcp_tool,
                           mcp_method=self.mcp_method, policy=self.policy,
                           pod=self.pod, after_id=self.cursor, limit=self.limit)


class OverviewParams(AuditParams):
    """Filters of GET /v1/audit/overview, and how finely to cut the time range."""

    buckets: int = Field(default=48, ge=1, le=500)


def rows_page(engine: Engine, writer: AuditWriter, f: AuditFilter) -> dict[str, Any]:
    writer.flush(timeout=2)  # read your own writes
    rows, cursor = page(engine, f)
    return {"rows": [r.as_json() for r in rows], "next_cursor": cursor}


def router(engine: Engine, writer: AuditWriter) -> APIRouter:
    api = APIRouter(prefix="/v1/audit", tags=["audit"])

    def scoped(caller: Principal, f: AuditFilter) -> AuditFilter:
        if caller.may(Scope.AUDIT):
            return f
        need(caller, Scope.OWN_AUDIT)
        return replace(f, owner=caller.id)

    @api.get("")
    def get_audit(caller: Caller, f: Annotated[AuditParams, Query()]) -> dict[str, Any]:
        query = scoped(caller, f.to_filter())
        if not f.latest:
            return rows_page(engine, writer, query)
        writer.flush(timeout=2)
        rows = latest(engine, query)
        return {"rows": [r.as_json() for r in rows],
                "next_cursor": rows[-1].id if rows else f.cursor}

    @api.get("/summary")
    def get_summary(caller: Caller, f: Annotated[AuditParams, Query()]) -> dict[str, Any]:
        return summary(engine, scoped(caller, f.to_filter()))

    @api.get("/overview")
    def get_overview(caller: Caller, f: Annotated[OverviewParams, Query()]) -> dict[str, Any]:
        """The web view's overview (gateway.audit.overview)."""
        writer.flush(timeout=2)
        return overview(engine, scoped(caller, f.to_filter()), buckets=f.buckets)

    @api.post("/flush", status_code=204)
    async def flush_audit(caller: Caller) -> None:
        need(caller, Scope.OWN_AUDIT)
        await run_in_threadpool(writer.flush)

    return api
