"""/v1/approvals: requests an `ask` rule holds, and the decisions on them. Deciding needs
the `policies` scope (admin, security): an allow can write a rule into a policy."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, ConfigDict, Field

from gateway.approvals.ask import Scope as Reach
from gateway.approvals.book import ApprovalBook
from gateway.control.api.deps import Caller, need
from gateway.control.roles import Principal, Scope

# a database integer: a larger number would fail in the driver, not be "not found"
ApprovalId = Annotated[int, Path(ge=1, le=2**62)]


class AllowBody(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    reach: Reach = Field(default=Reach.ONCE, alias="for")


def who(caller: Principal) -> str:
    """The decider as the approval and its audit row name them: token name and id."""
    return caller.name if caller.name == caller.id else f"{caller.name} ({caller.id})"


def router(book: ApprovalBook) -> APIRouter:
    api = APIRouter(prefix="/v1/approvals", tags=["approvals"])

    @api.get("")
    def list_approvals(caller: Caller,
                       status: Literal["pending", "allowed", "denied", "expired",
                                       "revoked"] | None =
                       None, limit: int = Query(default=200, ge=1, le=1000)
                       ) -> list[dict[str, Any]]:
        need(caller, Scope.POLICIES)
        return book.list(status, limit)

    @api.get("/{approval}")
    def get_approval(approval: ApprovalId, caller: Caller) -> dict[str, Any]:
        need(caller, Scope.POLICIES)
        return book.get(approval)

    @api.post("/{approval}/allow")
    def allow(approval: ApprovalId, caller: Caller,
              body: AllowBody | None = None) -> dict[str, Any]:
        need(caller, Scope.POLICIES)
        reach = body.reach if body is not None else Reach.ONCE
        return book.decide(approval, allow=True, scope=reach, who=who(caller))

    @api.post("/{approval}/deny")
    def deny(approval: ApprovalId, caller: Caller) -> dict[str, Any]:
        need(caller, Scope.POLICIES)
        return book.decide(approval, allow=False, scope=Reach.ONCE, who=who(caller))

    @api.post("/{approval}/revoke")
    def revoke(approval: ApprovalId, caller: Caller) -> dict[str, Any]:
        need(caller, Scope.POLICIES)
        return book.revoke(approval, who=who(caller))

    return api
