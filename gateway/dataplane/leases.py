"""A stream's share of its byte budgets (gateway.processes.budgets: the ledger in the main
process). A body of unknown length, a WebSocket or a raw TCP stream spends from a lease the
ledger granted; when less than half a chunk is left it asks for the next chunk, and when it
ends it gives back what it did not use. The ledger grants no more than the budget has left,
across every stream of every worker, so parallel streams together stop at the budget.

Overshoot: an async hook (a TCP or WebSocket message) waits for the next grant, so those
streams never pass their lease. mitmproxy calls an HTTP body's stream callable synchronously:
when its lease runs out while the next question is on its way, the body goes on *on credit*
and the client connection stops being read until the answer comes (`pause`). Credit is capped
at one chunk (`CHUNK`) per stream; past that, or when the answer falls short, the stream is
cut, and the credit it used is charged (`Coordinator.spend`). A stream that already knows the
budget is spent (`spent`) gets no credit. The end of a body waits in the async `request` hook
(`settle`) for an answer on its way, before the end reaches the upstream.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from gateway.dataplane.coordinator import Coordinator
from gateway.processes.budgets import Cap, window_start

logger = logging.getLogger(__name__)

CHUNK = 1024 * 1024     # bytes asked for at a time; also the most one stream may overshoot


class Take(enum.Enum):
    SENT = "sent"           # within the lease
    CREDIT = "credit"       # past the lease, the next grant on its way: stop reading
    REFUSED = "refused"     # the budget is spent: not sent


@dataclass
class StreamLease:
    coord: Coordinator
    sandbox_id: str
    policy: str
    caps: tuple[Cap, ...]
    granted: int = 0        # bytes this stream may send (its reservation and its leases)
    at: float = 0.0         # when its last lease was granted (a give-back names the window)
    recent: int = field(init=False)     # granted in the windows of `at`: at most given back
    spent: bool = False     # the last grant took all that was left
    reserved: int = 0       # paid at admission (the announced body), never given back
    used: int = 0
    asking: asyncio.Task[None] | None = None
    # told when an answer came: resume reading; True when the stream is over its grant
    answered: list[Callable[[bool], None]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.recent = self.granted      # what admission granted, all at `at`

    @property
    def over(self) -> int:
        return max(0, self.used - self.granted)

    def take(self, size: int) -> Take:
        """For a stream callable (synchronous): may these `size` bytes go now?"""
        if self.used + size <= self.granted:
            self.used += size
            self._ahead()
            return Take.SENT
        if self.spent or self.used + size - self.granted > CHUNK:
            return Take.REFUSED
        self.used += size
        self._ask()
        return Take.CREDIT

    def covers(self, size: int) -> bool:
        """Whether `size` more bytes fit in what is already granted (no question needed)."""
        return self.used + size <= self.granted

    async def need(self, size: int) -> bool:
        """For an async hook: wait until these `size` bytes are leased; False when the budget
        has not got them."""
        while self.used + size > self.granted:
            if self.asking is None:
                if self.spent:
                    return False
                self._ask(self.used + size - self.granted)
            assert self.asking is not None
            await asyncio.shield(self.asking)
            if self.spent and self.used + size > self.granted:
                return False
        self.used += size
        self._ahead()
        return True

    async def settle(self) -> bool:
        """Wait for an answer on its way; False when the stream used more than it got."""
        if self.asking is not None:
            await asyncio.shield(self.asking)
        return self.over == 0

    def end(self) -> None:
        """The stream ended (or paused, like a WebSocket's upgrade answered): give back what
        it leased and did not send, charge credit it used; it asks anew if it goes on."""
        if self.asking is not None:     # its answer may still grant: settle after it
            self.asking.add_done_callback(lambda _asked: self.end())
            return
        # what was not used was granted last; only what the windows of `at` were charged goes
        # back to them (bytes granted in an earlier window stay counted: never undercount)
        unused = min(self.granted - max(self.used, self.reserved), self.recent)
        if unused > 0:
            self.coord.unlease(self.sandbox_id, self.policy, list(self.caps), unused, self.at)
        if self.over:
            self.coord.spend(self.sandbox_id, self.policy, list(self.caps), self.over)
        self.reserved = self.granted = self.used = self.recent = 0

    def _windows(self, at: float) -> tuple[int, ...]:
        return tuple(window_start(at, cap.per) for cap in self.caps)

    def _ahead(self) -> None:
        # a body whose announced length was reserved has all it may send: no lease ahead
        leasing = self.granted > self.reserved or not self.reserved
        if leasing and not self.spent and self.asking is None and \
                self.granted - self.used < CHUNK // 2:
            self._ask()

    def _ask(self, short: int = 0) -> None:
        if self.asking is None:
            self.asking = asyncio.ensure_future(self._lease(short))

    async def _lease(self, short: int) -> None:
        """Ask until the stream is out of credit and has `short` more, or nothing is left (a
        grant may be smaller than asked while the budget has more: the ledger shares out
        what is left)."""
        try:
            while True:
                want = max(CHUNK, self.over + short + CHUNK // 2)
                grant = await self.coord.lease(self.sandbox_id, self.policy, list(self.caps),
                                               want)
                self.granted += grant.granted
                if grant.granted:
                    same = self._windows(grant.at) == self._windows(self.at)
                    self.recent = self.recent + grant.granted if same else grant.granted
                    self.at = grant.at
                self.spent = grant.spent
                if self.spent or self.used + short <= self.granted:
                    break
        except Exception:   # never leave the stream waiting: it is refused what it lacks
            logger.exception("a budget lease for sandbox %s failed", self.sandbox_id)
            self.spent = True
        self.asking = None
        for told in list(self.answered):
            told(self.over > 0)
