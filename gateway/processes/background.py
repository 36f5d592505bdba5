"""The gateway's background work, each a loop the composition roots start (serve.py,
worker.py, api_only.py): policy reload and sync, reaping expired sandboxes, the warm pool,
the firewall watchdog, audit retention. A failed round is logged; the next one tries again."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from sqlalchemy.engine import Engine

from gateway.audit.chain import apply_retention
from gateway.audit.heads import HeadSigner
from gateway.control.policy_store import PolicyStore
from gateway.control.policy_sync import PolicySync
from gateway.control.sandboxes.lifecycle import Sandboxes
from gateway.timing import (
    POLICY_RELOAD_INTERVAL,
    POLICY_SYNC_INTERVAL,
    REAP_INTERVAL,
    RETENTION_INTERVAL,
    WARM_RETRY,
)
from sandbox_net.errors import FirewallError

logger = logging.getLogger(__name__)


async def every(seconds: float, work: Callable[[], object], failure: str) -> None:
    """Run the blocking `work` in a thread every `seconds`, forever."""
    while True:
        await asyncio.sleep(seconds)
        try:
            await asyncio.to_thread(work)
        except Exception:
            logger.exception(failure)


async def reload_policies(policies: PolicyStore) -> None:
    await every(POLICY_RELOAD_INTERVAL, policies.refresh,
                "policy reload failed; the active versions stay")


async def sync_policies(sync: PolicySync) -> None:
    await every(POLICY_SYNC_INTERVAL, sync.pull, "policy sync failed; will retry")


async def reap(sandboxes: Sandboxes) -> None:
    await every(REAP_INTERVAL, sandboxes.reap, "removing expired sandboxes failed; will retry")


async def keep_warm(sandboxes: Sandboxes) -> None:
    while sandboxes.warm.size:
        await asyncio.sleep(REAP_INTERVAL)
        try:
            await asyncio.to_thread(sandboxes.keep_warm)
        except Exception:
            logger.exception("starting a warm sandbox failed; retrying in %.0f s", WARM_RETRY)
            await asyncio.sleep(WARM_RETRY)


async def watch_firewall(interval: float, restore: Callable[[], str | None]) -> None:
    """Reinstall the nftables table, with every wired link's source pin, when it is changed
    or deleted (an operator's mistake). Meanwhile new sandboxes are refused (creation
    verifies the table) and existing links do not forward (per-link forwarding is off), so
    no sandbox gains direct egress; a lost pin only cuts its link off."""
    while interval:
        await asyncio.sleep(interval)
        try:
            problem = await asyncio.to_thread(restore)
            if problem is not None:
                logger.error("egress rules changed or missing (%s); reinstalled them", problem)
        except FirewallError:
            logger.exception("could not reinstall the egress rules; will retry")
        except Exception:
            logger.exception("checking the egress rules failed; will retry")


async def retention(engine: Engine, days: int | None, signer: HeadSigner | None) -> None:
    while days is not None:
        try:
            deleted = await asyncio.to_thread(apply_retention, engine, days, signer)
            if deleted:
                logger.info("audit retention: %d rows older than %d days deleted", deleted, days)
        except Exception:
            logger.exception("audit retention failed")
        await asyncio.sleep(RETENTION_INTERVAL)
