"""Backpressure for the gateway's DNS without stalling its event loop (which also serves the
control API and the proxy workers' questions).

Each source address (a sandbox) has a token bucket of queries and a bounded queue of held
queries. A query is answered at once while its sandbox has tokens, nothing held, and the
audit queue has room. Otherwise it is held, and answered later in order as tokens and room
come back: a sandbox that floods gets its answers late, the others do not. Beyond the bound,
queries are dropped unanswered (as an overloaded resolver would; stub resolvers retry), and
counted; every second the count goes into one `dropped_by_throttle` audit row for that
sandbox (its `dropped` field), so queries seen = rows of their own + dropped.
"""

from __future__ import annotations

import logging
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field

from gateway.audit.writer import AuditWriter
from gateway.dataplane.registry import Registry
from gateway.timing import DNS_BURST, DNS_HELD, DNS_QUERIES_PER_SECOND

logger = logging.getLogger(__name__)

type Send = Callable[[], None]   # answers one held query


@dataclass
class _Source:
    tokens: float
    stamp: float
    held: deque[Send] = field(default_factory=deque)

    def refill(self, now: float) -> None:
        self.tokens = min(DNS_BURST, self.tokens + (now - self.stamp) * DNS_QUERIES_PER_SECOND)
        self.stamp = now


class DnsThrottle:
    def __init__(self, registry: Registry, audit: AuditWriter) -> None:
        self.registry = registry
        self.audit = audit
        self._sources: dict[str, _Source] = {}
        self.dropped: Counter[str | None] = Counter()    # sandbox id -> not yet summarised

    def _source(self, address: str, now: float) -> _Source:
        source = self._sources.get(address)
        if source is None:
            source = self._sources[address] = _Source(DNS_BURST, now)
        return source

    def admit(self, address: str) -> bool:
        """Whether a query from `address` may be answered now (it takes a token)."""
        now = time.monotonic()
        source = self._source(address, now)
        if source.held or not self.audit.has_room():
            return False
        source.refill(now)
        if source.tokens < 1:
            return False
        source.tokens -= 1
        return True

    def hold(self, address: str, send: Send) -> None:
        """Answer later, or drop (and count) when the sandbox already has DNS_HELD waiting."""
        source = self._source(address, time.monotonic())
        if len(source.held) < DNS_HELD:
            source.held.append(send)
        else:
            sandbox = self.registry.by_ip(address)
            self.lost(sandbox.id if sandbox else None)

    def lost(self, sandbox_id: str | None) -> None:
        """A query of the sandbox that will have no row of its own."""
        self.dropped[sandbox_id] += 1

    def drain(self) -> None:
        """Answer held queries as tokens and audit room allow (every DNS_TICK)."""
        now = time.monotonic()
        for address, source in list(self._sources.items()):
            source.refill(now)
            while source.held and source.tokens >= 1 and self.audit.has_room():
                source.tokens -= 1
                source.held.popleft()()
            if not source.held and source.tokens >= DNS_BURST:
                del self._sources[address]     # idle: nothing of it is kept

    def summarise(self) -> None:
        """One dropped_by_throttle row per sandbox that lost rows since the last summary."""
        for sandbox_id, count in list(self.dropped.items()):
            if self.audit.offer(sandbox_id=sandbox_id, decision="deny",
                                reason="dropped_by_throttle", protocol="dns", port=53,
                                dropped=count,
                                error=f"{count} DNS queries dropped unanswered: the sandbox "
                                      "sent more than the gateway answers per second"):
                del self.dropped[sandbox_id]
                logger.warning("DNS of sandbox %s throttled: %d queries dropped", sandbox_id,
                               count)

    def tracked(self) -> int:
        return len(self._sources)
