"""The warm pool: gVisor sandboxes started ahead, per image, wired but unknown to the gateway
(so any egress of theirs is refused as `unknown_sandbox`) until a create call with the
default limits and user claims one of its image."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from gateway.control.sandboxes.schemas import SandboxCreate

if TYPE_CHECKING:
    from gateway.control.sandboxes.lifecycle import Started

# a warm sandbox has the default ones; its user is the image's default
WARM_DEFAULTS = ("memory_mb", "cpus", "max_pids", "disk_mb", "user")


class WarmPool:
    def __init__(self, size: int) -> None:
        self.size = size      # per image
        self._lock = threading.Lock()
        self._ready: list[Started] = []
        self._closed = False

    def __len__(self) -> int:
        return len(self._ready)

    def wanted(self, image_ids: list[str]) -> str | None:
        """The first image (by content id) with fewer than `size` sandboxes waiting."""
        with self._lock:
            if self._closed:
                return None
            return next((i for i in image_ids
                         if sum(s.image_id == i for s in self._ready) < self.size), None)

    def claim(self, request: SandboxCreate, image_id: str) -> Started | None:
        defaults = SandboxCreate.model_fields
        if request.runtime != "gvisor" or any(
                getattr(request, f) != defaults[f].default for f in WARM_DEFAULTS):
            return None
        with self._lock:
            found = next((s for s in self._ready if s.image_id == image_id), None)
            if found is not None:
                self._ready.remove(found)
            return found

    def put(self, started: Started) -> bool:
        """Keep a started sandbox; False once the pool is closed (the caller destroys it)."""
        with self._lock:
            if self._closed:
                return False
            self._ready.append(started)
            return True

    def drop_except(self, image_ids: set[str]) -> list[Started]:
        """Take out the sandboxes of other images (rebuilt or removed), to be destroyed."""
        with self._lock:
            stale = [s for s in self._ready if s.image_id not in image_ids]
            self._ready = [s for s in self._ready if s.image_id in image_ids]
        return stale

    def close(self) -> list[Started]:
        """No more sandboxes are kept; returns those waiting, to be destroyed."""
        with self._lock:
            self._closed = True
            waiting, self._ready = self._ready, []
        return waiting
