"""`sandgate api`: the control API without a gateway, for the central Deployment of a cluster
(docs/DEPLOY.md). It serves policies, secrets and the audit log from the shared database;
sandboxes are created on the node gateways (`sandgate serve`), which apply policy changes
made here within the sync bound (gateway.control.policy_sync). Needs no privileges."""

from __future__ import annotations

import asyncio

import uvicorn

from gateway.audit.writer import AuditWriter
from gateway.control.api import ControlPlane, create_app
from gateway.control.policy_store import PolicyStore
from gateway.control.policy_sync import PolicySync
from gateway.control.secrets import Secrets
from gateway.db import make_engine
from gateway.processes import background
from gateway.settings import Settings
from vault.keyring import open_vault


async def serve_api(settings: Settings) -> None:
    settings.home.mkdir(parents=True, exist_ok=True)
    gateway_id = settings.create_gateway_id()
    engine = make_engine(settings.db_url)
    writer = AuditWriter(engine, gateway_id=gateway_id, spool=settings.spool_file)
    writer.start()   # writes nothing of its own; the audit routes flush through it
    policies = PolicyStore(settings.policy_dir)
    sync = PolicySync(engine, settings.policy_dir, gateway_id,
                      settings.home / "policy-sync.revision")
    await asyncio.to_thread(sync.pull)
    policies.publish = sync.publish
    secrets = Secrets(open_vault(engine, settings.key_source, create=True), settings.key_source)
    app = create_app(ControlPlane(engine, writer, policies, secrets), lambda: True, local=False)
    server = uvicorn.Server(uvicorn.Config(app, host=settings.api_host, port=settings.api_port,
                                           log_level="warning", lifespan="off"))
    tasks = [asyncio.ensure_future(background.reload_policies(policies)),
             asyncio.ensure_future(background.sync_policies(sync))]
    try:
        await server.serve()
    finally:
        for task in tasks:
            task.cancel()
        writer.close()


def check_settings(settings: Settings) -> str | None:
    """Why this cannot serve a cluster, if it cannot."""
    if settings.database_url is None and not settings.allow_sqlite:
        return ("sandgate api serves a shared database; set SANDGATE_DATABASE_URL to the "
                "PostgreSQL URL the node gateways use")
    return None
