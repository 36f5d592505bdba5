"""POST /v1/policies/{name}/replay: `sandgate policy replay` through the API, for a CI gate on
policy changes. The candidate is the stored policy `name`, or the YAML in the body (checked
like a PUT, never stored).

It reads every sandbox's recorded requests and shows how a policy judges them, so the caller
needs both the `policies` and the `audit` scope (admin, security). An auditor reads the log
but not policies, an operator only its own sandboxes' rows: neither may replay.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.engine import Engine
from starlette.concurrency import run_in_threadpool

from gateway.audit.query import parse_time
from gateway.audit.recordings import recordings
from gateway.audit.writer import AuditWriter
from gateway.control.api.deps import Caller, need
from gateway.control.policy_store import PolicyStore
from gateway.control.roles import Scope
from gateway.errors import BadRequest
from policies.loader import PolicyError, directory_resolver, parse
from policies.loader import compose as compose_policy
from policies.matcher import CompiledPolicy
from policies.replay import replay
from policies.yamlsource import MAX_BYTES

MAX_ROWS = 200_000   # rows one API call reads; `truncated` says when there were more


class ReplayBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    since: str = Field(default="7d", max_length=64)
    sandboxes: list[str] = Field(default_factory=list, max_length=100)
    yaml: str | None = Field(default=None, max_length=MAX_BYTES)   # an unstored candidate


def _candidate(policies: PolicyStore, name: str, text: str | None) -> CompiledPolicy:
    if text is None:
        path = policies.path_for(name)
        try:
            return policies.load(path)
        except PolicyError as e:
            raise BadRequest(f"policy {name} is invalid:\n{e}", "fix the listed problems") \
                from e
    try:
        return compose_policy(parse(text, f"{name}.yaml"), directory_resolver(policies.search))
    except PolicyError as e:
        raise BadRequest(f"invalid policy:\n{e}", "fix the listed problems") from e


def router(policies: PolicyStore, engine: Engine, writer: AuditWriter) -> APIRouter:
    api = APIRouter(prefix="/v1/policies", tags=["policies"])

    def run(name: str, body: ReplayBody) -> dict[str, Any]:
        try:
            since = parse_time(body.since)
        except ValueError as e:
            raise BadRequest(str(e)) from e
        candidate = _candidate(policies, name, body.yaml)
        writer.flush(timeout=2)   # requests still queued count too
        records, truncated = recordings(engine, since=since, sandboxes=body.sandboxes,
                                        max_rows=MAX_ROWS)
        return {**replay(candidate, records).as_json(), "truncated": truncated}

    @api.post("/{name}/replay")
    async def replay_policy(name: str, body: ReplayBody, caller: Caller) -> dict[str, Any]:
        need(caller, Scope.POLICIES)
        need(caller, Scope.AUDIT)
        return await run_in_threadpool(run, name, body)

    return api
