"""The warm pool: gVisor sandboxes started ahead, wired but unknown to the gateway (so any
egress of theirs is refused as `unknown_sandbox`) until a create call with the default
limits claims one."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from gateway.control.sandboxes.schemas import SandboxCreate

if TYPE_CHECKING:
    from gateway.control.sandboxes.lifecycle import Started

WARM_LIMITS = ("memory_mb", "cpus", "max_pids")   # a warm sandbox has the default ones


class WarmPool:
    def __init__(self, size: int) -> None:
        self.size = size
        self._lock = threading.Lock()
        self._ready: list[Started] = []
        self._closed = False

    def __len__(self) -> int:
        return len(self._ready)

    def wanted(self) -> bool:
        with self._lock:
            return not self._closed and len(self._ready) < self.size

    def claim(self, request: SandboxCreate) -> Started | None:
        defaults = SandboxCreate.model_fields
        if request.runtime != "gvisor" or any(
                getattr(request, f) != defaults[f].default for f in WARM_LIMITS):
            return None
        with self._lock:
            return self._ready.pop(0) if self._ready else None

    def put(self, started: Started) -> bool:
        """Keep a started sandbox; False once the pool is closed (the caller destroys it)."""
        with self._lock:
            if self._closed:
                return False
            self._ready.append(started)
            return True

    def close(self) -> list[Started]:
        """No more sandboxes are kept; returns those waiting, to be destroyed."""
        with self._lock:
            self._closed = True
            waiting, self._ready = self._ready, []
        return waiting
