"""Per-rule rate limits (requests and bytes per minute), per sandbox, as token buckets."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from policies.schema import Limits


@dataclass
class Bucket:
    capacity: float
    tokens: float
    updated: float = field(default_factory=time.monotonic)

    def refill(self, now: float) -> None:
        rate = self.capacity / 60.0
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * rate)
        self.updated = now


class RateLimiter:
    """Buckets keyed by (sandbox, rule). Requests take a token before they go out; bytes are
    charged after, and a rule in byte debt admits nothing until the debt is refilled."""

    def __init__(self) -> None:
        self._buckets: dict[tuple[str, str, str], Bucket] = {}

    def _bucket(self, key: tuple[str, str, str], capacity: int) -> Bucket:
        bucket = self._buckets.get(key)
        if bucket is None or bucket.capacity != capacity:
            bucket = self._buckets[key] = Bucket(float(capacity), float(capacity))
        bucket.refill(time.monotonic())
        return bucket

    def admit(self, sandbox_id: str, rule: str, limits: Limits | None) -> bool:
        if limits is None:
            return True
        if limits.bytes_per_minute is not None and \
                self._bucket((sandbox_id, rule, "bytes"), limits.bytes_per_minute).tokens < 0:
            return False
        if limits.requests_per_minute is not None:
            bucket = self._bucket((sandbox_id, rule, "requests"), limits.requests_per_minute)
            if bucket.tokens < 1:
                return False
            bucket.tokens -= 1
        return True

    def charge_bytes(self, sandbox_id: str, rule: str, limits: Limits | None, size: int) -> None:
        if limits is not None and limits.bytes_per_minute is not None:
            self._bucket((sandbox_id, rule, "bytes"), limits.bytes_per_minute).tokens -= size

    def forget(self, sandbox_id: str) -> None:
        for key in [k for k in self._buckets if k[0] == sandbox_id]:
            del self._buckets[key]
