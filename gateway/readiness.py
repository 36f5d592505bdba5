"""One readiness signal for `/readyz` and for sandbox creation: every proxy worker listens and
has applied the registry the hub sent it. A sandbox created before that would have its first
connection refused by a worker that is not there yet."""

from __future__ import annotations

import threading


class Readiness:
    """Set by the hub (on its event loop), read and waited on by the control API's threads."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._ready_workers = 0
        self._stopping = False
        self._changed = threading.Condition()

    def update(self, ready_workers: int) -> None:
        with self._changed:
            self._ready_workers = ready_workers
            self._changed.notify_all()

    def stopping(self) -> None:
        with self._changed:
            self._stopping = True
            self._changed.notify_all()

    def __call__(self) -> bool:
        return not self._stopping and self._ready_workers >= self.workers

    def wait(self, timeout: float) -> bool:
        """Block until ready, at most `timeout` seconds; whether it is."""
        with self._changed:
            return self._changed.wait_for(self, timeout)

    def describe(self) -> str:
        if self._stopping:
            return "the gateway is stopping"
        return f"{self._ready_workers} of {self.workers} proxy workers are ready"
