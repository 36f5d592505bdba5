"""Budgets (policies.schema.Budget): how much each sandbox may send per period, per rule and
for all its rules together. Kept in the main process beside the rate buckets, so every worker
charges the same counts.

Windows are fixed and aligned to the epoch (a `per: 1h` window starts on the hour, UTC): the
same on every gateway and easy to read in a summary. A request is admitted when no budget
that applies to it is spent; admitting it counts the request and reserves its head and its
body's length when the request gave one. A stream of unknown length (a chunked or HTTP/2 body,
a WebSocket, raw TCP) *leases* bytes: the ledger grants at most what is left (`lease`, also
asked with the admission), the stream spends its lease and asks for the next when it runs
low, and gives back what it did not use when it ends (`give_back`; a lease never given back
lapses with its window). Every grant comes out of this one count, so streams in parallel, on
any worker, together stop at the budget (gateway.dataplane.leases).

A new count starts from what the audit log says its window spent (a restart, another gateway
on the database): read in a thread (`ready`), never on the event loop that asks.
"""

from __future__ import annotations

import asyncio
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
SMALL_GRANT = 64 * 1024     # a lease is a quarter of what is left, but never less than this
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
    """The answer to a request: refused (which budget, in words), or admitted with the bytes
    leased to it (`leased`, granted at `at`, epoch seconds: what it may send beyond its
    reservation before it asks again) and whether nothing is left after it (`spent`)."""

    refused: str | None = None
    leased: int = 0
    at: float = 0.0
    spent: bool = False

    def plain(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class Grant:
    """The answer to a lease: `granted` bytes; `spent`: nothing is left after them."""

    granted: int
    at: float
    spent: bool = False

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
        start = window_start(now, self.cap.per)
        if start != self.window:
            self.window, self.bytes_up, self.requests = start, 0, 0

    @property
    def left(self) -> int | None:
        return None if self.cap.bytes_up is None else max(0, self.cap.bytes_up - self.bytes_up)


def window_start(now: float, per: int) -> int:
    """The start of the window of `per` seconds that holds `now` (aligned to the clock)."""
    return int(now) - int(now) % per


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
        self._seeding: dict[tuple[Key, int, int], asyncio.Future[tuple[int, int]]] = {}
        self._gone: set[str] = set()      # sandboxes removed: shown until their windows end
        self._lock = threading.Lock()       # the API thread reads while the hub charges

    def _entry(self, sandbox_id: str, policy: str, cap: Cap, now: float,
               seeded: tuple[int, int] = (0, 0)) -> _Usage:
        key = (sandbox_id, cap.scope, cap.rule or "")
        usage = self._usage.get(key)
        if usage is None or usage.cap.per != cap.per:
            usage = self._usage[key] = _Usage(cap, policy, window_start(now, cap.per), *seeded)
        usage.cap, usage.policy = cap, policy       # a reloaded policy's limits apply at once
        usage.roll(now)
        return usage

    async def ready(self, sandbox_id: str, policy: str, applying: Sequence[Cap]) -> None:
        """Start the counts `applying` needs from what the audit log says their windows spent
        before this process counted them. The log is read in a thread: the caller's event loop
        (the hub's, every worker's questions) goes on meanwhile; only this question waits."""
        if self.seed is None:
            return
        for cap in applying:
            key = (sandbox_id, cap.scope, cap.rule or "")
            now = self.clock()
            with self._lock:
                usage = self._usage.get(key)
                if usage is not None and usage.cap.per == cap.per:
                    continue
            window = window_start(now, cap.per)
            seeding = (key, cap.per, window)
            reading = self._seeding.get(seeding)
            if reading is None:     # one read per count, however many ask at once
                reading = self._seeding[seeding] = asyncio.ensure_future(
                    asyncio.to_thread(self._read, sandbox_id, cap.rule, window))
            try:
                spent = await asyncio.shield(reading)
            finally:
                self._seeding.pop(seeding, None)
            with self._lock:
                self._entry(sandbox_id, policy, cap, self.clock(),
                            spent if window == window_start(self.clock(), cap.per) else (0, 0))

    def _read(self, sandbox_id: str, rule: str | None, window: int) -> tuple[int, int]:
        assert self.seed is not None
        try:
            return self.seed(sandbox_id, rule, window)
        except Exception:
            # the audit log is away: count from nothing rather than stop the sandbox
            logger.exception("budget of sandbox %s: could not read what it spent", sandbox_id)
            return 0, 0

    def admit(self, sandbox_id: str, policy: str, applying: Sequence[Cap],
              expected: int, lease: int = 0) -> Allowance:
        """Count one request reserving `expected` bytes (its head and announced body), unless
        a budget forbids it; with `lease`, lease up to that many more (a body of unknown
        length)."""
        now = self.clock()
        with self._lock:
            entries = [self._entry(sandbox_id, policy, cap, now) for cap in applying]
            for usage in entries:
                if why := _spent(usage, expected):
                    return Allowance(refused=why)
            for usage in entries:
                usage.requests += 1
                usage.bytes_up += expected
            granted, spent = self._grant(entries, lease) if lease else (0, False)
            return Allowance(leased=granted, at=now, spent=spent)

    def lease(self, sandbox_id: str, policy: str, applying: Sequence[Cap], want: int) -> Grant:
        """Up to `want` more bytes for a stream, as far as every byte budget has them left:
        one count for every worker, so what two streams are granted never passes the
        budget."""
        now = self.clock()
        with self._lock:
            entries = [self._entry(sandbox_id, policy, cap, now) for cap in applying]
            granted, spent = self._grant(entries, want)
            return Grant(granted, now, spent)

    @staticmethod
    def _grant(entries: Sequence[_Usage], want: int) -> tuple[int, bool]:
        """At most a quarter of what is left (but at least SMALL_GRANT, when there is that
        much): one stream does not hold all that is left while others ask, and a budget
        smaller than a chunk still serves several streams."""
        lefts = [u.left for u in entries if u.left is not None]
        left = min(lefts, default=want)
        granted = max(0, min(want, left, max(left // 4, SMALL_GRANT)))
        for usage in entries:
            usage.bytes_up += granted
        return granted, granted >= left

    def give_back(self, sandbox_id: str, policy: str, applying: Sequence[Cap], size: int,
                  at: float) -> None:
        """What a stream leased at `at` and did not send. A lease from a window that has
        ended is not given back to the next one."""
        now = self.clock()
        with self._lock:
            for cap in applying:
                usage = self._entry(sandbox_id, policy, cap, now)
                if usage.window == window_start(at, cap.per):
                    usage.bytes_up = max(0, usage.bytes_up - size)

    def spend(self, sandbox_id: str, policy: str, applying: Sequence[Cap], size: int) -> None:
        """Bytes a stream sent beyond its lease (at most one lease chunk: while its question
        for the next was on its way), counted even past the limit: the summary tells the
        truth."""
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
            (f", this request is {expected} (head and body)" if expected else "")
    return None
