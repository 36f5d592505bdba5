"""/v1/sandboxes: create, list, delete, exec, files and the audit of one sandbox. An operator
reaches only the sandboxes it created."""

import json
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Annotated, Any

from fastapi import APIRouter, BackgroundTasks, Query, Response
from fastapi.responses import JSONResponse, StreamingResponse
from sqlalchemy.engine import Engine
from starlette.concurrency import run_in_threadpool

from gateway.audit.writer import AuditWriter
from gateway.control.api.audit import AuditParams, rows_page
from gateway.control.api.deps import Caller, need
from gateway.control.api.errors import Forbidden
from gateway.control.roles import Principal, Scope
from gateway.control.sandboxes.commands import Commands
from gateway.control.sandboxes.lifecycle import Sandboxes
from gateway.control.sandboxes.schemas import (
    ExecRequest,
    ExecResult,
    FileUpload,
    LocalExec,
    SandboxCreate,
    SandboxPublic,
)
from gateway.errors import BadRequest


def router(sandboxes: Sandboxes, commands: Commands, engine: Engine, writer: AuditWriter,
           local: bool) -> APIRouter:
    api = APIRouter(prefix="/v1/sandboxes", tags=["sandboxes"])

    def owned(caller: Principal, sandbox_id: str) -> SandboxPublic:
        need(caller, Scope.SANDBOXES)
        sandbox = sandboxes.get(sandbox_id)
        if caller.role != "admin" and sandbox.owner != caller.id:
            raise Forbidden(f"sandbox {sandbox_id} belongs to another owner")
        return sandbox

    @api.post("", status_code=201)
    async def create_sandbox(body: SandboxCreate, caller: Caller) -> SandboxPublic:
        need(caller, Scope.SANDBOXES)
        if not local and ("/" in body.policy or body.policy.endswith((".yaml", ".yml"))):
            raise BadRequest("over the network a policy is named, not a file path",
                             "PUT the policy to /v1/policies/{name} first")
        return await run_in_threadpool(sandboxes.create, body, caller.id)

    @api.get("")
    def list_sandboxes(caller: Caller) -> list[SandboxPublic]:
        need(caller, Scope.SANDBOXES)
        return [s for s in sandboxes.all() if caller.role == "admin" or s.owner == caller.id]

    @api.get("/{sandbox_id}")
    def get_sandbox(sandbox_id: str, caller: Caller) -> SandboxPublic:
        return owned(caller, sandbox_id)

    @api.delete("/{sandbox_id}", status_code=204)
    async def delete_sandbox(sandbox_id: str, caller: Caller, background: BackgroundTasks,
                             response: Response, wait: bool = True) -> None:
        """With `wait=false`, answers 202 at once and tears the sandbox down right after
        (`sandgate run` need not wait for a teardown to exit)."""
        owned(caller, sandbox_id)
        if wait:
            await run_in_threadpool(sandboxes.delete, sandbox_id)
        else:
            response.status_code = 202
            background.add_task(sandboxes.delete, sandbox_id)

    @api.post("/{sandbox_id}/exec")
    async def exec_command(sandbox_id: str, body: ExecRequest, caller: Caller) -> ExecResult:
        owned(caller, sandbox_id)
        return await run_in_threadpool(commands.exec, sandbox_id, body)

    @api.post("/{sandbox_id}/exec/stream")
    async def exec_stream(sandbox_id: str, body: ExecRequest,
                          caller: Caller) -> StreamingResponse:
        """Server-sent events: `stdout` and `stderr` (base64 data), then `exit`."""
        owned(caller, sandbox_id)

        async def events() -> AsyncIterator[str]:
            async for kind, data in commands.exec_stream(sandbox_id, body):
                yield f"event: {kind}\ndata: {json.dumps(data)}\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    @api.put("/{sandbox_id}/files", status_code=204)
    async def upload(sandbox_id: str, body: FileUpload, caller: Caller) -> None:
        owned(caller, sandbox_id)
        await run_in_threadpool(commands.upload, sandbox_id, body)

    @api.get("/{sandbox_id}/files")
    async def download_or_list(sandbox_id: str, path: str, caller: Caller,
                               list_dir: Annotated[bool, Query(alias="list")] = False
                               ) -> Response:
        owned(caller, sandbox_id)
        if list_dir:
            entries = await run_in_threadpool(commands.list_files, sandbox_id, path)
            return JSONResponse(entries)
        data = await run_in_threadpool(commands.download, sandbox_id, path)
        return Response(content=data, media_type="application/octet-stream")

    @api.get("/{sandbox_id}/audit")
    def sandbox_audit(sandbox_id: str, caller: Caller,
                      f: Annotated[AuditParams, Query()]) -> dict[str, Any]:
        sandbox = sandboxes.get_any(sandbox_id)
        if not (caller.may(Scope.AUDIT) or (caller.may(Scope.OWN_AUDIT)
                                            and sandbox.owner == caller.id)):
            raise Forbidden(f"the audit of sandbox {sandbox_id} is not yours to read")
        return rows_page(engine, writer,
                         replace(f.to_filter(), sandbox_id=sandbox_id))

    if local:
        @api.post("/{sandbox_id}/local-exec", include_in_schema=False)
        def local_exec(sandbox_id: str, body: LocalExec) -> dict[str, list[str]]:
            runtime, spec = sandboxes.running(sandbox_id)
            return {"argv": runtime.exec_command(spec, body.cmd, env=body.env, cwd=body.cwd)}

    return api
