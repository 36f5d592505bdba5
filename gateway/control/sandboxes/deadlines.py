"""Each running sandbox's deadlines: a hard time to live, and an idle timeout counted from
its last activity (egress reported by the proxy workers, or a command run through the API),
which the registry's `SandboxContext.last_active` holds."""

from __future__ import annotations

import time
from dataclasses import dataclass

from gateway.dataplane.registry import Registry


@dataclass(frozen=True, slots=True)
class Deadline:
    expires: float              # time.time() of the hard limit
    idle: int | None            # seconds without activity allowed


class Deadlines:
    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self._deadlines: dict[str, Deadline] = {}

    def arm(self, sandbox_id: str, expires: float, idle: int | None) -> None:
        self._deadlines[sandbox_id] = Deadline(expires, idle)

    def drop(self, sandbox_id: str) -> None:
        self._deadlines.pop(sandbox_id, None)

    def ids(self) -> set[str]:
        return set(self._deadlines)

    def due(self, now: float) -> list[tuple[str, str]]:
        """The sandboxes whose time is up at `now`, each with why: expired or idle."""
        ended = []
        for sandbox_id, deadline in list(self._deadlines.items()):
            context = self.registry.by_id(sandbox_id)
            idle = context is not None and deadline.idle is not None and \
                now - context.last_active > deadline.idle
            if now >= deadline.expires or idle:
                ended.append((sandbox_id, "expired" if now >= deadline.expires else "idle"))
        return ended

    def touch(self, sandbox_id: str) -> None:
        context = self.registry.by_id(sandbox_id)
        if context is not None:
            context.last_active = time.time()
