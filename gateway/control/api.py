"""The control API. Routes are thin: they check the caller's role, validate, call the service,
and map errors to responses in one place.

Two listeners serve it: the root-only unix socket (the caller is the local administrator;
`local-exec` exists only there) and TCP (default 127.0.0.1:8700), where every route but
/healthz, /readyz and the static audit page needs a bearer token.
"""

# No `from __future__ import annotations` here: FastAPI reads the route signatures, whose
# `Caller` annotation is a closure variable of the router factories.
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from gateway.audit.query import AuditFilter, latest, page, parse_time, summary
from gateway.control.auth import LOCAL_ROOT, Principal, Scope, authenticate
from gateway.control.schemas import (
    ExecRequest,
    ExecResult,
    FileUpload,
    LocalExec,
    SandboxCreate,
    SandboxPublic,
)
from gateway.control.service import SandboxService
from gateway.errors import BadRequest, SandgateError

WEB = Path(__file__).resolve().parent / "web"


class Unauthorized(SandgateError):
    status = 401


class Forbidden(SandgateError):
    status = 403


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
                           status=self.status, secret=self.secret, after_id=self.cursor,
                           limit=self.limit)


class PolicyBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    yaml: str = Field(max_length=1_000_000)


class PolicyTest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    method: str = Field(default="GET", max_length=16)
    url: str = Field(max_length=8192)


class SecretBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    value: str = Field(min_length=1, max_length=65536, repr=False)


def _principal_factory(service: SandboxService, local: bool) -> Callable[..., Any]:
    def principal(request: Request) -> Principal:
        if local:
            return LOCAL_ROOT
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise Unauthorized("missing bearer token",
                               "send Authorization: Bearer <token> (sandgate token create)")
        found = authenticate(service.engine, token)
        if found is None:
            raise Unauthorized("invalid or revoked token")
        return found

    return principal


def create_app(service: SandboxService, is_ready: Callable[[], bool], *,
               local: bool = True, sandboxes: bool = True) -> FastAPI:
    """The control API; without `sandboxes`, only policies, secrets and the audit log (the
    central API of a cluster: `sandgate api`)."""
    app = FastAPI(title="sandgate control API", version="1",
                  description="Sandboxes whose only way out is the sandgate egress gateway.")
    principal = _principal_factory(service, local)
    Caller = Annotated[Principal, Depends(principal)]

    def need(caller: Principal, scope: Scope) -> None:
        if not caller.may(scope):
            raise Forbidden(f"role {caller.role} may not use {scope}",
                            "ask an admin for a token with a role that grants it")

    @app.exception_handler(SandgateError)
    async def _error(_request: Request, exc: SandgateError) -> JSONResponse:
        return JSONResponse(status_code=exc.status,
                            content={"error": type(exc).__name__, "detail": exc.message,
                                     "hint": exc.hint})

    @app.exception_handler(UnicodeEncodeError)
    async def _not_text(_request: Request, _exc: UnicodeEncodeError) -> JSONResponse:
        # JSON can carry lone surrogates, which are not text; no value reaches a 500
        return JSONResponse(status_code=422, content={
            "error": "invalid_request", "detail": "strings must be valid UTF-8 text"})

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        fields = [{"field": ".".join(str(p) for p in e["loc"]), "message": e["msg"]}
                  for e in exc.errors()]
        return JSONResponse(status_code=422, content={
            "error": "invalid_request", "detail": "; ".join(
                f"{f['field']}: {f['message']}" for f in fields), "fields": fields})

    @app.get("/healthz", tags=["health"])
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"])
    def readyz() -> JSONResponse:
        ready = is_ready()
        return JSONResponse(status_code=200 if ready else 503,
                            content={"status": "ready" if ready else "starting",
                                     "warm_sandboxes": service.warm_count()})

    if sandboxes:
        app.include_router(_sandbox_routes(service, Caller, need, local))
    app.include_router(_policy_routes(service, Caller, need))
    app.include_router(_secret_routes(service, Caller, need))
    app.include_router(_audit_routes(service, Caller, need))

    @app.get("/audit", include_in_schema=False)
    def audit_page() -> FileResponse:
        return FileResponse(WEB / "audit.html", media_type="text/html")

    return app


def _sandbox_routes(service: SandboxService, Caller: Any,
                    need: Callable[[Principal, Scope], None], local: bool) -> APIRouter:
    router = APIRouter(prefix="/v1/sandboxes", tags=["sandboxes"])

    def owned(caller: Principal, sandbox_id: str) -> SandboxPublic:
        need(caller, Scope.SANDBOXES)
        sandbox = service.get(sandbox_id)
        if caller.role != "admin" and sandbox.owner != caller.name:
            raise Forbidden(f"sandbox {sandbox_id} belongs to another owner")
        return sandbox

    @router.post("", status_code=201)
    async def create_sandbox(body: SandboxCreate, caller: Caller) -> SandboxPublic:
        need(caller, Scope.SANDBOXES)
        if not local and ("/" in body.policy or body.policy.endswith((".yaml", ".yml"))):
            raise BadRequest("over the network a policy is named, not a file path",
                             "PUT the policy to /v1/policies/{name} first")
        return await run_in_threadpool(service.create, body, caller.name)

    @router.get("")
    def list_sandboxes(caller: Caller) -> list[SandboxPublic]:
        need(caller, Scope.SANDBOXES)
        return [s for s in service.all() if caller.role == "admin" or s.owner == caller.name]

    @router.get("/{sandbox_id}")
    def get_sandbox(sandbox_id: str, caller: Caller) -> SandboxPublic:
        return owned(caller, sandbox_id)

    @router.delete("/{sandbox_id}", status_code=204)
    async def delete_sandbox(sandbox_id: str, caller: Caller) -> None:
        owned(caller, sandbox_id)
        await run_in_threadpool(service.delete, sandbox_id)

    @router.post("/{sandbox_id}/exec")
    async def exec_command(sandbox_id: str, body: ExecRequest, caller: Caller) -> ExecResult:
        owned(caller, sandbox_id)
        return await run_in_threadpool(service.exec, sandbox_id, body)

    @router.post("/{sandbox_id}/exec/stream")
    async def exec_stream(sandbox_id: str, body: ExecRequest,
                          caller: Caller) -> StreamingResponse:
        """Server-sent events: `stdout` and `stderr` (base64 data), then `exit`."""
        owned(caller, sandbox_id)

        async def events() -> AsyncIterator[str]:
            async for kind, data in service.exec_stream(sandbox_id, body):
                yield f"event: {kind}\ndata: {json.dumps(data)}\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    @router.put("/{sandbox_id}/files", status_code=204)
    async def upload(sandbox_id: str, body: FileUpload, caller: Caller) -> None:
        owned(caller, sandbox_id)
        await run_in_threadpool(service.upload, sandbox_id, body)

    @router.get("/{sandbox_id}/files")
    async def download_or_list(sandbox_id: str, path: str, caller: Caller,
                               list_dir: Annotated[bool, Query(alias="list")] = False
                               ) -> Response:
        owned(caller, sandbox_id)
        if list_dir:
            entries = await run_in_threadpool(service.list_files, sandbox_id, path)
            return JSONResponse(entries)
        data = await run_in_threadpool(service.download, sandbox_id, path)
        return Response(content=data, media_type="application/octet-stream")

    @router.get("/{sandbox_id}/audit")
    def sandbox_audit(sandbox_id: str, caller: Caller,
                      f: Annotated[AuditParams, Query()]) -> dict[str, Any]:
        sandbox = service.get_any(sandbox_id)
        if not (caller.may(Scope.AUDIT) or (caller.may(Scope.OWN_AUDIT)
                                            and sandbox.owner == caller.name)):
            raise Forbidden(f"the audit of sandbox {sandbox_id} is not yours to read")
        service.audit.flush(timeout=2)  # read your own writes
        rows, cursor = page(service.engine, replace(f.to_filter(), sandbox_id=sandbox_id))
        return {"rows": [r.as_json() for r in rows], "next_cursor": cursor}

    if local:
        @router.post("/{sandbox_id}/local-exec", include_in_schema=False)
        def local_exec(sandbox_id: str, body: LocalExec) -> dict[str, list[str]]:
            spec = service.spec(sandbox_id)
            runtime = service.runtime_of(sandbox_id)
            argv = runtime.exec_command(spec, body.cmd, env=body.env, cwd=body.cwd)
            return {"argv": argv}

    return router


def _policy_routes(service: SandboxService, Caller: Any,
                   need: Callable[[Principal, Scope], None]) -> APIRouter:
    router = APIRouter(prefix="/v1/policies", tags=["policies"])

    @router.get("")
    def list_policies(caller: Caller) -> list[dict[str, Any]]:
        need(caller, Scope.POLICIES)
        return service.policies.catalogue()

    @router.get("/status")
    def policy_status(caller: Caller) -> dict[str, Any]:
        need(caller, Scope.POLICIES)
        return service.policies.status()

    @router.get("/{name}")
    def get_policy(name: str, caller: Caller) -> dict[str, Any]:
        need(caller, Scope.POLICIES)
        return service.policies.get(name)

    @router.put("/{name}")
    async def put_policy(name: str, body: PolicyBody, caller: Caller) -> dict[str, Any]:
        need(caller, Scope.POLICIES)
        return await run_in_threadpool(service.policies.put, name, body.yaml)

    @router.delete("/{name}", status_code=204)
    def delete_policy(name: str, caller: Caller) -> None:
        need(caller, Scope.POLICIES)
        service.policies.delete(name)

    @router.post("/{name}/test")
    def test_policy(name: str, body: PolicyTest, caller: Caller) -> dict[str, Any]:
        need(caller, Scope.POLICIES)
        return service.policies.test(name, body.method, body.url)

    return router


def _secret_routes(service: SandboxService, Caller: Any,
                   need: Callable[[Principal, Scope], None]) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["secrets"])

    @router.put("/secrets/{name}")
    async def put_secret(name: str, body: SecretBody, caller: Caller) -> dict[str, Any]:
        need(caller, Scope.SECRETS)
        version = await run_in_threadpool(service.put_secret, name, body.value)
        return {"name": name, "version": version}

    @router.get("/secrets")
    def list_secrets(caller: Caller) -> list[dict[str, Any]]:
        need(caller, Scope.SECRETS)
        return service.list_secrets()

    @router.delete("/secrets/{name}", status_code=204)
    def delete_secret(name: str, caller: Caller) -> None:
        need(caller, Scope.SECRETS)
        service.delete_secret(name)

    @router.post("/vault/rotate-master")
    async def rotate_master(caller: Caller) -> dict[str, Any]:
        need(caller, Scope.VAULT)
        key_id, count = await run_in_threadpool(service.rotate_master_key)
        return {"master_key_id": key_id, "rewrapped": count}

    return router


def _audit_routes(service: SandboxService, Caller: Any,
                  need: Callable[[Principal, Scope], None]) -> APIRouter:
    router = APIRouter(prefix="/v1/audit", tags=["audit"])

    def scoped(caller: Principal, f: AuditFilter) -> AuditFilter:
        if caller.may(Scope.AUDIT):
            return f
        need(caller, Scope.OWN_AUDIT)
        return replace(f, owner=caller.name)

    @router.get("")
    def get_audit(caller: Caller, f: Annotated[AuditParams, Query()]) -> dict[str, Any]:
        query = scoped(caller, f.to_filter())
        service.audit.flush(timeout=2)  # read your own writes
        if f.latest:
            rows = latest(service.engine, query)
            return {"rows": [r.as_json() for r in rows],
                    "next_cursor": rows[-1].id if rows else f.cursor}
        rows, cursor = page(service.engine, query)
        return {"rows": [r.as_json() for r in rows], "next_cursor": cursor}

    @router.get("/summary")
    def get_summary(caller: Caller, f: Annotated[AuditParams, Query()]) -> dict[str, Any]:
        return summary(service.engine, scoped(caller, f.to_filter()))

    @router.post("/flush", status_code=204)
    async def flush_audit(caller: Caller) -> None:
        need(caller, Scope.OWN_AUDIT)
        await run_in_threadpool(service.audit.flush)

    return router
