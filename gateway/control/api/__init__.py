"""The control API. Routes are thin: they check the caller's role, validate, call the control
plane, and errors map to responses in one place (errors.py).

Two listeners serve it: the root-only unix socket (the caller is the local administrator;
`local-exec` exists only there) and TCP (default 127.0.0.1:8700), where every route but
/healthz, /readyz and the static audit page needs a bearer token.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.responses import FileResponse, JSONResponse
from sqlalchemy.engine import Engine

from gateway.approvals.book import ApprovalBook
from gateway.audit.writer import AuditWriter
from gateway.control.api import (
    approvals,
    audit,
    budgets,
    errors,
    images,
    pods,
    policies,
    replay,
    sandboxes,
    secrets,
)
from gateway.control.api.deps import Guard
from gateway.control.policy_store import PolicyStore
from gateway.control.sandboxes.commands import Commands
from gateway.control.sandboxes.lifecycle import Sandboxes
from gateway.control.sandboxes.pods import Pods
from gateway.control.secrets import Secrets
from gateway.errors import NotFound

__all__ = ["ControlPlane", "create_app"]

WEB = Path(__file__).resolve().parent.parent.parent / "web"
# What the pages load, by name: nothing else under web/ is served, nothing from elsewhere is
# fetched (the chart library is vendored: web/vendor/uplot).
ASSETS = {"sandgate.css": (WEB / "sandgate.css", "text/css"),
          "audit.js": (WEB / "audit.js", "text/javascript"),
          "approvals.js": (WEB / "approvals.js", "text/javascript"),
          "overview.js": (WEB / "overview.js", "text/javascript"),
          "uPlot.iife.min.js": (WEB / "vendor/uplot/uPlot.iife.min.js", "text/javascript"),
          "uPlot.min.css": (WEB / "vendor/uplot/uPlot.min.css", "text/css")}
# Every page: its scripts are its own files (a row's text can never run as script, even if
# a page got it wrong), no page may be framed (a framed approvals page could be clicked
# through by another site), nothing goes anywhere but this API. uPlot sets inline styles.
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; "
                               "style-src 'self' 'unsafe-inline'; connect-src 'self'; "
                               "img-src 'self' data:; base-uri 'none'; form-action 'none'; "
                               "frame-ancestors 'none'",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}


@dataclass(frozen=True)
class ControlPlane:
    """What the API serves. Without sandboxes: the central API of a cluster (`sandgate
    api`), policies, secrets and the audit log only."""

    engine: Engine
    audit: AuditWriter
    policies: PolicyStore
    secrets: Secrets
    sandboxes: Sandboxes | None = None
    commands: Commands | None = None
    approvals: ApprovalBook | None = None
    # what sandboxes have spent of their budgets (gateway.processes.budgets), when this
    # process runs them
    budgets: Callable[[], list[dict[str, Any]]] | None = None
    pods: Pods | None = None


def create_app(plane: ControlPlane, is_ready: Callable[[], bool], *,
               local: bool = True) -> FastAPI:
    app = FastAPI(title="sandgate control API", version="1",
                  description="Sandboxes whose only way out is the sandgate egress gateway.")
    errors.install(app)
    app.state.guard = Guard(plane.engine, local)

    @app.get("/healthz", tags=["health"])
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"])
    def readyz() -> JSONResponse:
        ready = is_ready()
        warm = len(plane.sandboxes.warm) if plane.sandboxes else 0
        return JSONResponse(status_code=200 if ready else 503,
                            content={"status": "ready" if ready else "starting",
                                     "warm_sandboxes": warm})

    if plane.sandboxes is not None and plane.commands is not None:
        app.include_router(sandboxes.router(plane.sandboxes, plane.commands, plane.engine,
                                            plane.audit, local))
        app.include_router(images.router(plane.sandboxes.images))
    if plane.pods is not None and local:
        app.include_router(pods.router(plane.pods))
    app.include_router(policies.router(plane.policies))
    app.include_router(replay.router(plane.policies, plane.engine, plane.audit))
    app.include_router(secrets.router(plane.secrets))
    app.include_router(audit.router(plane.engine, plane.audit))
    app.include_router(budgets.router(plane.budgets))

    @app.get("/audit", include_in_schema=False)
    def audit_page() -> FileResponse:
        return page("audit.html")

    if plane.approvals is not None:
        app.include_router(approvals.router(plane.approvals))

        @app.get("/approvals", include_in_schema=False)
        def approvals_page() -> FileResponse:
            return page("approvals.html")

    @app.get("/overview", include_in_schema=False)
    def overview_page() -> FileResponse:
        return page("overview.html")

    @app.get("/web/{name}", include_in_schema=False)
    def asset(name: str) -> FileResponse:
        if name not in ASSETS:
            raise NotFound(f"no web asset {name}")
        path, media_type = ASSETS[name]
        return FileResponse(path, media_type=media_type)

    return app


def page(name: str) -> FileResponse:
    return FileResponse(WEB / name, media_type="text/html", headers=PAGE_HEADERS)
