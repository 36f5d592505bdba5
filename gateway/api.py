"""The control API. Routes are thin: they validate, call the service, and map errors to
responses in one place. This app is served on the local control socket (root only)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal

from fastapi import FastAPI, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from gateway.audit_query import AuditFilter, page, parse_time
from gateway.errors import BadRequest, SandgateError
from gateway.sandboxes import LocalExec, SandboxCreate, SandboxPublic
from gateway.service import SandboxService


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
    cursor: int | None = Field(default=None, description="next_cursor of the previous page")
    limit: int = Field(default=100, ge=1, le=10000)

    def to_filter(self) -> AuditFilter:
        try:
            since = parse_time(self.since) if self.since else None
            until = parse_time(self.until) if self.until else None
        except ValueError as e:
            raise BadRequest(str(e)) from e
        return AuditFilter(since=since, until=until, sandbox_id=self.sandbox, host=self.host,
                           decision=self.decision, reason=self.reason, rule=self.rule,
                           status=self.status, secret=self.secret, after_id=self.cursor,
                           limit=self.limit)


def create_app(service: SandboxService, is_ready: Callable[[], bool]) -> FastAPI:
    app = FastAPI(title="sandgate control API", version="1")

    @app.exception_handler(SandgateError)
    async def _error(_request: Request, exc: SandgateError) -> JSONResponse:
        return JSONResponse(status_code=exc.status,
                            content={"error": type(exc).__name__, "detail": exc.message,
                                     "hint": exc.hint})

    @app.get("/healthz")
    def healthz() -> JSONResponse:
        ready = is_ready()
        return JSONResponse(status_code=200 if ready else 503,
                            content={"status": "ok" if ready else "starting"})

    @app.post("/v1/sandboxes", status_code=201)
    async def create_sandbox(body: SandboxCreate) -> SandboxPublic:
        return await run_in_threadpool(service.create, body)

    @app.get("/v1/sandboxes")
    def list_sandboxes() -> list[SandboxPublic]:
        return service.all()

    @app.get("/v1/sandboxes/{sandbox_id}")
    def get_sandbox(sandbox_id: str) -> SandboxPublic:
        return service.get(sandbox_id)

    @app.delete("/v1/sandboxes/{sandbox_id}", status_code=204)
    async def delete_sandbox(sandbox_id: str) -> None:
        await run_in_threadpool(service.delete, sandbox_id)

    @app.post("/v1/sandboxes/{sandbox_id}/local-exec")
    def local_exec(sandbox_id: str, body: LocalExec) -> dict[str, list[str]]:
        spec = service.spec(sandbox_id)
        argv = service.runtime.exec_command(spec, body.cmd, env=body.env, cwd=body.cwd)
        return {"argv": argv}

    @app.post("/v1/vault/rotate-master")
    async def rotate_master() -> dict[str, Any]:
        key_id, count = await run_in_threadpool(service.rotate_master_key)
        return {"master_key_id": key_id, "rewrapped": count}

    @app.get("/v1/policies/status")
    def policy_status() -> dict[str, Any]:
        return service.policies.status()

    @app.post("/v1/audit/flush", status_code=204)
    async def flush_audit() -> None:
        await run_in_threadpool(service.audit.flush)

    @app.get("/v1/audit")
    def get_audit(f: Annotated[AuditParams, Query()]) -> dict[str, Any]:
        rows, cursor = page(service.engine, f.to_filter())
        return {"rows": [r.as_json() for r in rows], "next_cursor": cursor}

    return app
