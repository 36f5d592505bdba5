"""/v1/policies: the policy store (validated like `sandgate policy check`)."""

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from gateway.control.api.deps import Caller, need
from gateway.control.policy_store import PolicyStore
from gateway.control.roles import Scope
from policies.yamlsource import MAX_BYTES


class PolicyBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # the loader's own limit (bytes) applies after this one (characters)
    yaml: str = Field(max_length=MAX_BYTES)


class PolicyTest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    method: str = Field(default="GET", max_length=16)
    url: str = Field(max_length=8192)
    headers: dict[str, str] = Field(default_factory=dict, max_length=64)
    body_size: int = Field(default=0, ge=0)
    # an MCP message in the body: tools/call of mcp_tool (with string mcp_args), or mcp_method
    mcp_tool: str | None = Field(default=None, max_length=200)
    mcp_args: dict[str, str] = Field(default_factory=dict, max_length=64)
    mcp_method: str | None = Field(default=None, max_length=200)


def router(policies: PolicyStore) -> APIRouter:
    api = APIRouter(prefix="/v1/policies", tags=["policies"])

    @api.get("")
    def list_policies(caller: Caller) -> list[dict[str, Any]]:
        need(caller, Scope.POLICIES)
        return policies.catalogue()

    @api.get("/status")
    def policy_status(caller: Caller) -> dict[str, Any]:
        need(caller, Scope.POLICIES)
        return policies.status()

    @api.get("/{name}")
    def get_policy(name: str, caller: Caller) -> dict[str, Any]:
        need(caller, Scope.POLICIES)
        return policies.get(name)

    @api.put("/{name}")
    async def put_policy(name: str, body: PolicyBody, caller: Caller) -> dict[str, Any]:
        need(caller, Scope.POLICIES)
        return await run_in_threadpool(policies.put, name, body.yaml)

    @api.delete("/{name}", status_code=204)
    def delete_policy(name: str, caller: Caller) -> None:
        need(caller, Scope.POLICIES)
        policies.delete(name)

    @api.post("/{name}/test")
    def test_policy(name: str, body: PolicyTest, caller: Caller) -> dict[str, Any]:
        need(caller, Scope.POLICIES)
        return policies.test(name, body.method, body.url, body.headers, body.body_size,
                             mcp=(body.mcp_tool, body.mcp_args, body.mcp_method))

    return api
