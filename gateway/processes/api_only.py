"""`sandgate api`: the control API without a gateway, for the central Deployment of a cluster
(docs/DEPLOY.md). It serves policies, secrets, tokens' use and the audit log from the shared
database; sandboxes are created on the node gateways (`sandgate serve`), which apply policy
changes made here within the sync bound (gateway.control.policy_sync). Needs no privileges."""

from __future__ import annotations

import asyncio
import os

import uvicorn

from gateway.audit.writer import AuditWriter
from gateway.control.api import create_app
from gateway.control.policy_store import PolicyStore, watch
from gateway.control.policy_sync import PolicySync, keep_synced
from gateway.control.service import SandboxService
from gateway.dataplane.registry import Registry
from gateway.db import make_engine
from gateway.settings import Settings
from vault.keyring import open_vault


async def serve_api(settings: Settings) -> None:
    settings.home.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.db_url)
    writer = AuditWriter(engine, gateway_id=settings.gateway_id, spool=settings.spool_file)
    writer.start()   # writes nothing of its own; the audit routes flush through it
    policies = PolicyStore(settings.policy_dir)
    sync = PolicySync(engine, settings.policy_dir, settings.gateway_id,
                      settings.home / "policy-sync.revision")
    await asyncio.to_thread(sync.pull)
    policies.publish = sync.publish
    service = SandboxService(settings, engine, Registry(), {}, policies, writer,
                             ca_bundle=settings.home / "none",
                             vault=open_vault(engine, settings.key_source, create=True))
    app = create_app(service, lambda: True, local=False, sandboxes=False)
    server = uvicorn.Server(uvicorn.Config(app, host=settings.api_host, port=settings.api_port,
                                           log_level="warning", lifespan="off"))
    background = [asyncio.ensure_future(watch(policies)), asyncio.ensure_future(
        keep_synced(sync))]
    try:
        await server.serve()
    finally:
        for task in background:
            task.cancel()
        writer.close()


def check_settings(settings: Settings) -> str | None:
    """Why this cannot serve a cluster, if it cannot."""
    if settings.database_url is None and os.environ.get("SANDGATE_ALLOW_SQLITE") != "1":
        return ("sandgate api serves a shared database; set SANDGATE_DATABASE_URL to the "
                "PostgreSQL URL the node gateways use")
    return None
