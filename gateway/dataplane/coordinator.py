"""What the data plane needs from the state all gateway processes share: per-sandbox
connection counts, rate-limit buckets, budgets, quarantine, the synthetic DNS map, activity, the
audit log, and the values providers mint. In a proxy worker the hub client answers
(gateway.processes.hub_client); in the main process, the authority itself
(gateway.processes.authority.LocalCoordinator).

Everything a worker decides per request that is not in this list (policy, placeholders,
vetting) it decides alone, from its replica of the registry."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from gateway.approvals.ask import Ask, Outcome
from gateway.processes.budgets import Allowance, Cap, Grant
from policies.schema import Limits, Narrow
from vault.secret import SecretValue


@dataclass(frozen=True, slots=True)
class Credential:
    """A provider secret's current value as the main process's broker (gateway.providers)
    minted it for every worker, or why there is none. Good to use until `fresh_until`
    (epoch seconds); ask again after."""

    value: SecretValue | None
    fresh_until: float
    error: str | None = None


class Coordinator(Protocol):
    async def acquire(self, sandbox_id: str, limit: int) -> bool:
        """Count one more open connection for the sandbox, unless it is at `limit`."""

    def release(self, sandbox_id: str) -> None: ...

    async def admit(self, sandbox_id: str, rule: str, limits: Limits) -> bool:
        """Take a request token from the rule's bucket (and check its byte budget)."""

    def charge(self, sandbox_id: str, rule: str, limits: Limits, size: int) -> None: ...

    async def budget(self, sandbox_id: str, policy: str, caps: list[Cap],
                     expected: int, lease: int = 0) -> Allowance:
        """Count one request against the budgets that apply to it (`caps`), reserving
        `expected` bytes and leasing up to `lease` more, unless one is spent."""

    async def lease(self, sandbox_id: str, policy: str, caps: list[Cap], want: int) -> Grant:
        """Up to `want` more bytes for a stream, as far as its budgets have them left."""

    def unlease(self, sandbox_id: str, policy: str, caps: list[Cap], size: int,
                at: float) -> None:
        """Leased bytes (granted at `at`) a stream did not send."""

    def spend(self, sandbox_id: str, policy: str, caps: list[Cap], size: int) -> None:
        """Bytes a stream sent beyond its lease (gateway.dataplane.leases: credit)."""

    def quarantine(self, sandbox_id: str) -> None: ...

    async def approve(self, ask: Ask) -> Outcome:
        """Hold the request until a person allows or denies it, or the time is up."""

    async def name_for(self, sandbox_id: str, address: str) -> str | None:
        """The name behind a synthetic address of the sandbox, if any."""

    def record(self, row: dict[str, Any]) -> None:
        """One audit row; `time` is the epoch seconds of the event."""

    def active(self, sandbox_id: str) -> None:
        """The sandbox used the network (for the idle timeout)."""

    async def drained(self) -> None:
        """Wait while the audit log is behind (the proxy slows down rather than drop rows)."""

    def forget(self, sandbox_id: str) -> None:
        """The sandbox is gone: drop whatever this process keeps about it."""

    async def credential(self, secret: str, generation: str, narrow: Narrow | None,
                         sandbox_id: str) -> Credential:
        """The value the broker minted for a provider secret (`generation`: the version of
        its configuration the asker knows), minted now if it has none fresh."""
