"""The control API. Routes are thin: they validate, call the service, and map errors to
responses in one place. This app is served on the local control socket (root only)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import FastAPI, Query, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from gateway import audit
from gateway.errors import SandgateError
from gateway.sandboxes import LocalExec, SandboxCreate, SandboxPublic
from gateway.service import SandboxService


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

    @app.get("/v1/audit")
    def get_audit(
        sandbox: str | None = None, host: str | None = None, decision: str | None = None,
        limit: Annotated[int, Query(ge=1, le=10000)] = 100,
    ) -> list[dict[str, Any]]:
        service.audit.flush()
        rows = audit.query(service.engine, audit.AuditQuery(sandbox, host, decision, limit))
        return [r.as_json() for r in rows]

    return app
