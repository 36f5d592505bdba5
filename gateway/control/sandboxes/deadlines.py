"""Each running sandbox's deadlines: a hard time to live, and an idle timeout counted from
its last activity (egress reported by the proxy workers, or a command run through the API),
which the registry's `SandboxContext.last_active` holds.

The last activity is also written to the sandbox's record, so that a restarted gateway
resumes the idle timer instead of restarting it: from the reaper's loop, never from the
request path, and at most once per ACTIVITY_SAVE_EVERY seconds per sandbox (exactly at a
clean stop). After a kill the timer resumes from up to that much earlier: an idle sandbox is
removed sooner, never later."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from gateway.dataplane.registry import Registry
from gateway.timing import ACTIVITY_SAVE_EVERY

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Deadline:
    expires: float              # time.time() of the hard limit
    idle: int | None            # seconds without activity allowed


class Deadlines:
    def __init__(self, registry: Registry,
                 save_activity: Callable[[str, datetime], object]) -> None:
        self.registry = registry
        self.save_activity = save_activity
        self._deadlines: dict[str, Deadline] = {}
        self._saved: dict[str, float] = {}      # the last activity on each record

    def arm(self, sandbox_id: str, expires: float, idle: int | None) -> None:
        """Once the sandbox is registered (its record holds its last activity)."""
        self._deadlines[sandbox_id] = Deadline(expires, idle)
        context = self.registry.by_id(sandbox_id)
        self._saved[sandbox_id] = context.last_active if context else time.time()

    def drop(self, sandbox_id: str) -> None:
        self._deadlines.pop(sandbox_id, None)
        self._saved.pop(sandbox_id, None)

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

    def keep_activity(self, every: float = ACTIVITY_SAVE_EVERY) -> None:
        """Write the last activity of each sandbox with an idle timeout whose activity has
        moved on by `every` seconds since it was last written (0: every change)."""
        for sandbox_id, deadline in list(self._deadlines.items()):
            context = self.registry.by_id(sandbox_id)
            saved = self._saved.get(sandbox_id)
            if deadline.idle is None or context is None or saved is None:
                continue
            if context.last_active > saved and context.last_active - saved >= every:
                self._saved[sandbox_id] = context.last_active
                try:
                    self.save_activity(sandbox_id,
                                       datetime.fromtimestamp(context.last_active, UTC))
                except Exception:   # the next write is one interval on; reaping goes on
                    logger.exception("writing the last activity of sandbox %s", sandbox_id)
