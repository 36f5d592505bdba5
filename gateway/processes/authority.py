"""The one holder of the state every gateway process must agree on, in the main process:
per-sandbox connection counts, rate-limit buckets, quarantine, the synthetic DNS map and
activity. Proxy workers reach it through the hub (gateway.processes.hub); the main
process's own DNS server through `LocalCoordinator`."""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from gateway.approvals.ask import Ask, Outcome
from gateway.audit.writer import AuditWriter
from gateway.dataplane.coordinator import Credential
from gateway.dataplane.registry import Registry
from gateway.processes.buckets import RateLimiter
from gateway.processes.budgets import Allowance, Cap, Grant, Ledger
from policies.schema import Limits, Narrow

if TYPE_CHECKING:
    from gateway.approvals.book import ApprovalBook
    from gateway.providers.broker import Broker

logger = logging.getLogger(__name__)

NO_APPROVALS = Outcome(False, "approval_required", detail="this gateway asks nobody")


class Authority:
    """Counts are kept per holder (a worker's connection, or 'main') so a worker that dies
    gives its connections back."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.limiter = RateLimiter()
        self.ledger = Ledger()
        self._conns: dict[str, Counter[str]] = {}
        self.approvals: ApprovalBook | None = None
        # writes a quarantine to the sandbox's record (gateway.processes.serve)
        self.keep_quarantine: Callable[[str], object] = lambda _sandbox_id: None
        self._quarantined: set[str] = set()

    def open_connections(self, sandbox_id: str) -> int:
        return sum(c[sandbox_id] for c in self._conns.values())

    def acquire_for(self, holder: str, sandbox_id: str, limit: int) -> bool:
        if self.open_connections(sandbox_id) >= limit:
            return False
        self._conns.setdefault(holder, Counter())[sandbox_id] += 1
        return True

    def release_for(self, holder: str, sandbox_id: str) -> None:
        counts = self._conns.get(holder)
        if counts is not None and counts[sandbox_id] > 0:
            counts[sandbox_id] -= 1
            if not counts[sandbox_id]:
                del counts[sandbox_id]

    def forget_holder(self, holder: str) -> None:
        self._conns.pop(holder, None)

    def forget(self, sandbox_id: str) -> None:
        """A removed sandbox's buckets and counts go with it."""
        self.limiter.forget(sandbox_id)
        self.ledger.forget(sandbox_id)
        self._quarantined.discard(sandbox_id)
        for counts in self._conns.values():
            counts.pop(sandbox_id, None)

    def admit(self, sandbox_id: str, rule: str, limits: Limits) -> bool:
        return self.limiter.admit(sandbox_id, rule, limits)

    def charge(self, sandbox_id: str, rule: str, limits: Limits, size: int) -> None:
        self.limiter.charge_bytes(sandbox_id, rule, limits, size)

    async def approve(self, ask: Ask) -> Outcome:
        """Held until a person decides or the time is up (gateway.approvals.book)."""
        if self.approvals is None:
            return NO_APPROVALS
        return await self.approvals.ask(ask)

    async def budget(self, sandbox_id: str, policy: str, caps: list[Cap],
                     expected: int, lease: int = 0) -> Allowance:
        await self.ledger.ready(sandbox_id, policy, caps)
        return self.ledger.admit(sandbox_id, policy, caps, expected, lease)

    async def lease(self, sandbox_id: str, policy: str, caps: list[Cap], want: int) -> Grant:
        await self.ledger.ready(sandbox_id, policy, caps)
        return self.ledger.lease(sandbox_id, policy, caps, want)

    def unlease(self, sandbox_id: str, policy: str, caps: list[Cap], size: int,
                at: float) -> None:
        self.ledger.give_back(sandbox_id, policy, caps, size, at)

    def spend(self, sandbox_id: str, policy: str, caps: list[Cap], size: int) -> None:
        self.ledger.spend(sandbox_id, policy, caps, size)

    def budget_usage(self) -> list[dict[str, Any]]:
        """What each sandbox has spent of its budgets, with the sandbox's owner (the API
        shows operators their own)."""
        rows = self.ledger.usage()
        for row in rows:
            sandbox = self.registry.by_id(row["sandbox_id"])
            row["owner"] = sandbox.owner if sandbox is not None else None
        return rows

    def quarantine(self, sandbox_id: str) -> None:
        """Once per sandbox: every worker told, then the quarantine handed to be written to
        the sandbox's record (serve: from a thread, within milliseconds; a restart keeps it
        even when the attempt's audit row was still queued). Not asked whether the sandbox
        is marked already: the main process's DNS server marks its own copy before it calls
        this."""
        sandbox = self.registry.by_id(sandbox_id)
        if sandbox is None or sandbox_id in self._quarantined:
            return
        self._quarantined.add(sandbox_id)
        self.registry.quarantine(sandbox)
        try:
            self.keep_quarantine(sandbox_id)
        except Exception:   # the database is away: the audit row (spooled) still says so
            logger.exception("could not write the quarantine of sandbox %s to its record",
                             sandbox_id)

    def name_for(self, sandbox_id: str, address: str) -> str | None:
        sandbox = self.registry.by_id(sandbox_id)
        return sandbox.pool.name_for(address) if sandbox is not None else None

    def active(self, sandbox_id: str) -> None:
        sandbox = self.registry.by_id(sandbox_id)
        if sandbox is not None:
            sandbox.last_active = time.time()


def audit_row(row: dict[str, Any]) -> dict[str, Any]:
    """A recorded row as the audit writer takes it (`time` from epoch seconds)."""
    return {**row, "time": datetime.fromtimestamp(row["time"], UTC)}


class LocalCoordinator:
    """The main process's own view (its DNS server), straight onto the authority."""

    def __init__(self, authority: Authority, audit: AuditWriter,
                 broker: Broker | None = None) -> None:
        self.authority = authority
        self.audit = audit
        self.broker = broker
        # Told of a row the full audit queue did not take (the DNS throttle counts it).
        self.lost: Callable[[str | None], None] = lambda _sandbox_id: None

    async def acquire(self, sandbox_id: str, limit: int) -> bool:
        return self.authority.acquire_for("main", sandbox_id, limit)

    def release(self, sandbox_id: str) -> None:
        self.authority.release_for("main", sandbox_id)

    async def admit(self, sandbox_id: str, rule: str, limits: Limits) -> bool:
        return self.authority.admit(sandbox_id, rule, limits)

    def charge(self, sandbox_id: str, rule: str, limits: Limits, size: int) -> None:
        self.authority.charge(sandbox_id, rule, limits, size)

    async def budget(self, sandbox_id: str, policy: str, caps: list[Cap],
                     expected: int, lease: int = 0) -> Allowance:
        return await self.authority.budget(sandbox_id, policy, caps, expected, lease)

    async def lease(self, sandbox_id: str, policy: str, caps: list[Cap], want: int) -> Grant:
        return await self.authority.lease(sandbox_id, policy, caps, want)

    def unlease(self, sandbox_id: str, policy: str, caps: list[Cap], size: int,
                at: float) -> None:
        self.authority.unlease(sandbox_id, policy, caps, size, at)

    def spend(self, sandbox_id: str, policy: str, caps: list[Cap], size: int) -> None:
        self.authority.spend(sandbox_id, policy, caps, size)

    def quarantine(self, sandbox_id: str) -> None:
        self.authority.quarantine(sandbox_id)

    async def approve(self, ask: Ask) -> Outcome:
        return await self.authority.approve(ask)

    async def name_for(self, sandbox_id: str, address: str) -> str | None:
        return self.authority.name_for(sandbox_id, address)

    def record(self, row: dict[str, Any]) -> None:
        # Never waits: this runs on the main event loop (the DNS server).
        if not self.audit.offer(**audit_row(row)):
            self.lost(row.get("sandbox_id"))

    def active(self, sandbox_id: str) -> None:
        self.authority.active(sandbox_id)

    async def drained(self) -> None:
        return None   # in the main process, the DNS throttle holds back a flooding sandbox

    def forget(self, sandbox_id: str) -> None:
        self.authority.forget(sandbox_id)

    async def credential(self, secret: str, generation: str, narrow: Narrow | None,
                         sandbox_id: str) -> Credential:
        if self.broker is None:
            return Credential(None, time.time() + 5, "this gateway mints no credentials")
        return await self.broker.credential(secret, generation, narrow, sandbox_id)
