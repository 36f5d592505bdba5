"""The main process's proxy workers (gateway.processes.worker): started, restarted when one
dies, and stopped last at shut-down so their audit rows reach the writer."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import subprocess
import sys
import time

from gateway.settings import Settings
from gateway.timing import MAX_BACKOFF, QUICK_DEATH, RESTART_CHECK

logger = logging.getLogger(__name__)



class WorkerPool:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.processes: dict[int, subprocess.Popen[bytes]] = {}
        self.started: dict[int, float] = {}
        self.backoff: dict[int, float] = {}     # seconds waited after the last quick death
        self.retry_at: dict[int, float] = {}
        self.stopping = False

    def _spawn(self, index: int) -> None:
        env = {**os.environ, **self.settings.as_env()}
        self.processes[index] = subprocess.Popen(
            [sys.executable, "-m", "gateway.processes.worker", str(index)], env=env)
        self.started[index] = time.monotonic()

    def start(self) -> None:
        for index in range(self.settings.workers):
            self._spawn(index)

    async def supervise(self) -> None:
        """Replace a worker that dies; until then nftables sends its share of new
        connections to a closed port (refused, never forwarded). One that keeps dying at
        start (its port taken, say) is retried less and less often."""
        while not self.stopping:
            await asyncio.sleep(RESTART_CHECK)
            now = time.monotonic()
            for index, process in list(self.processes.items()):
                if process.poll() is None or self.stopping:
                    continue
                if index not in self.retry_at:
                    quick = now - self.started[index] < QUICK_DEATH
                    delay = min(MAX_BACKOFF, 2 * self.backoff.get(index, 0.5)) if quick else 0
                    self.backoff[index] = delay
                    self.retry_at[index] = now + delay
                    logger.error("proxy worker %d exited with %s; restarting it in %.0f s",
                                 index, process.returncode, delay)
                if now >= self.retry_at[index]:
                    del self.retry_at[index]
                    self._spawn(index)

    async def stop(self, timeout: float = 10.0) -> None:
        self.stopping = True
        for process in self.processes.values():
            with contextlib.suppress(ProcessLookupError):
                process.terminate()
        for process in self.processes.values():
            try:
                await asyncio.to_thread(process.wait, timeout)
            except subprocess.TimeoutExpired:
                logger.error("proxy worker %d did not stop; killing it", process.pid)
                process.kill()
                await asyncio.to_thread(process.wait)
