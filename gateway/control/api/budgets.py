"""/v1/budgets: what each sandbox on this gateway has spent of its budgets in the current
window (docs/POLICY.md, Budgets). The counts live in the gateway's main process; `sandgate
api` runs no sandboxes and answers an empty list."""

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter

from gateway.control.api.deps import Caller, need
from gateway.control.roles import Scope

type Usage = Callable[[], list[dict[str, Any]]]


def router(usage: Usage | None) -> APIRouter:
    api = APIRouter(prefix="/v1/budgets", tags=["audit"])

    @api.get("")
    def get_budgets(caller: Caller, sandbox: str | None = None) -> dict[str, Any]:
        rows = usage() if usage is not None else []
        if not caller.may(Scope.AUDIT):
            need(caller, Scope.OWN_AUDIT)
            rows = [r for r in rows if r["owner"] == caller.id]
        if sandbox is not None:
            rows = [r for r in rows if r["sandbox_id"] == sandbox]
        return {"budgets": rows}

    return api
