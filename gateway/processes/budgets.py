"""Budgets (policies.schema.Budget): how much each sandbox may send per period, per rule and
for all its rules together. Kept in the main process beside the rate buckets, so every worker
charges the same counts.

Windows are fixed and aligned to the epoch (a `per: 1h` window starts on the hour, UTC): the
same on every gateway and easy to read in a summary. A request is admitted when no budget
that applies to it is spent; admitting it counts the request and reserves its body's length
when the request gave one. A body of unknown length is told how much is left and charged as
it streams (`spend`), so the upload that crosses the budget is the one cut. Uploads of unknown
length that stream at the same time each see what was left when they started: together they
may pass the budget by at most that much.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from policies.budgets import show_period, show_size
from policies.schema import Budget

logger = logging.getLogger(__name__)

SANDBOX = "sandbox"     # the scope of a policy-level budget
RULE = "rule"


@dataclass(frozen=True, slots=True)
class Cap:
    """One budget that applies to a request, as it travels to the main process."""

    scope: str              # RULE or SANDBOX
    rule: str | None        # the rule's id, for a rule budget
    bytes_up: int | None
    requests: int | None
    per: int                # seconds

    @classmethod
    def of(cls, budget: Budget, rule: str | None) -> Cap:
        return cls(RULE if rule is not None else SANDBOX, rule, budget.bytes_up,
                   budget.requests, budget.per)

    def describe(self) -> str:
        parts = [f"{show_size(self.bytes_up)} up" if self.bytes_up else "",
                 f"{self.requests} requests" if self.requests else ""]
        owner = f"rule {self.rule}" if self.scope == RULE else "the sandbox"
        return f"{owner}'s budget ({' and '.join(p for p in parts if p)} " \
               f"per {show_period(self.per)})"


def caps(rule: str | None, rule_budget: Budget | None,
         sandbox_budget: Budget | None) -> tuple[Cap, ...]:
    found = []
    if rule_budget is not None and rule:
        found.append(Cap.of(rule_budget, rule))
    if sandbox_budget is not None:
        found.append(Cap.of(sandbox_budget, None))
    return tuple(found)


@dataclass(frozen=True, slots=True)
class Allowance:
    """The answer to a request: refused (which budget, in words), or admitted with how many
    body bytes may still go (None: no byte budget applies)."""

    refused: str | None = None
    left: int | None = None

    def plain(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _Usage:
    cap: Cap
    policy: str
    window: int             # epoch seconds the current window started
    bytes_up: int = 0
    requests: int = 0

    def roll(self, now: float) -> None:
        start = int(now) - int(now) % self.cap.per
        if start != self.window:
            self.window, self.bytes_up, self.requests = start, 0, 0


type Key = tuple[str, str, str]      # sandbox, scope, rule ('' for the sandbox's own)
# (sandbox, rule or None for all, window start in epoch seconds) -> (bytes up, requests)
type Seed = Callable[[str, str | None, int], tuple[int, int]]


class Ledger:
    def __init__(self, clock: Callable[[], float] = time.time, seed: Seed | None = None) -> None:
        """`seed`: what a budget's window had spent before this process began counting it
        (from the audit log: a restarted gateway goes on where it stopped)."""
        self.clock = clock
        self.seed = seed
        self._usage: dict[Key, _Usage] = {}
        self._gone: set[str] = set()      # sandboxes removed: shown until their windows end
        self._lock = threading.Lock()       # the API thread reads while the hub charges

    def _entry(self, sandbox_id: str, policy: str, cap: Cap, now: float) -> _Usage:
        key = (sandbox_id, cap.scope, cap.rule or "")
        usage = self._usage.get(key)
        if usage is None or usage.cap.per != cap.per:
            usage = self._usage[key] = _Usage(cap, policy, 0)
            usage.roll(now)
            self._seed(sandbox_id, usage)
        usage.cap, usage.policy = cap, policy       # a reloaded policy's limits apply at once
        usage.roll(now)
        return usage

    def _seed(self, sandbox_id: str, usage: _Usage) -> None:
        if self.seed is None:
            return
        try:
            usage.bytes_up, usage.requests = self.seed(sandbox_id, usage.cap.rule,
                                                       usage.window)
        except Exception:
            # the audit log is away: count from nothing rather than stop the sandbox
            logger.exception("budget of sandbox %s: could not read what it spent", sandbox_id)

    def admit(self, sandbox_id: str, policy: str, applying: Sequence[Cap],
              expected: int) -> Allowance:
        """Count one request reserving `expected` body bytes, unless a budget forbids it."""
        now = self.clock()
        with self._lock:
            entries = [self._entry(sandbox_id, policy, cap, now) for cap in applying]
            for usage in entries:
                if why := _spent(usage, expected):
                    return Allowance(refused=why)
            for usage in entries:
                usage.requests += 1
                usage.bytes_up += expected
            lefts = [u.cap.bytes_up - u.bytes_up for u in entries if u.cap.bytes_up]
            return Allowance(left=min(lefts) if lefts else None)

    def spend(self, sandbox_id: str, policy: str, applying: Sequence[Cap], size: int) -> None:
        """Body bytes beyond what admission reserved (a body of unknown length, a stream)."""
        now = self.clock()
        with self._lock:
            for cap in applying:
                self._entry(sandbox_id, policy, cap, now).bytes_up += size

    def usage(self) -> list[dict[str, Any]]:
        """Every budget in use and what is spent of it in its current window (a removed
        sandbox's until that window ends)."""
        now = self.clock()
        with self._lock:
            self._prune(now)
            return [{"sandbox_id": sandbox_id, "scope": scope, "rule": rule or None,
                     "sandbox_gone": sandbox_id in self._gone,
                     "policy": u.policy, "per": u.cap.per,
                     "window_start": u.window, "resets_at": u.window + u.cap.per,
                     "bytes_up": u.bytes_up, "bytes_up_limit": u.cap.bytes_up,
                     "requests": u.requests, "requests_limit": u.cap.requests}
                    for (sandbox_id, scope, rule), u in sorted(self._usage.items())]

    def forget(self, sandbox_id: str) -> None:
        """The sandbox is gone: what it spent stays readable until its windows end."""
        with self._lock:
            if any(k[0] == sandbox_id for k in self._usage):
                self._gone.add(sandbox_id)
            self._prune(self.clock())

    def _prune(self, now: float) -> None:
        for key, usage in list(self._usage.items()):
            if key[0] in self._gone and now >= usage.window + usage.cap.per:
                del self._usage[key]
            else:
                usage.roll(now)
        self._gone &= {k[0] for k in self._usage}


def _spent(usage: _Usage, expected: int) -> str | None:
    cap = usage.cap
    if cap.requests is not None and usage.requests >= cap.requests:
        return f"{cap.describe()} is spent: {usage.requests} requests sent"
    # spent (nothing left, so even a request without a body is refused: its path and
    # headers carry data too), or this body's announced length does not fit
    if cap.bytes_up is not None and (usage.bytes_up >= cap.bytes_up or
                                     usage.bytes_up + expected > cap.bytes_up):
        return f"{cap.describe()} is spent: {usage.bytes_up} bytes sent" + \
            (f", this body is {expected}" if expected else "")
    return None
