"""The main process's proxy workers (gateway.worker): started, restarted when one dies, and
stopped last at shut-down so their audit rows reach the writer."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import subprocess
import sys

from gateway.settings import Settings

logger = logging.getLogger(__name__)

RESTART_CHECK = 0.2   # seconds between looks for a dead worker


class WorkerPool:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.processes: dict[int, subprocess.Popen[bytes]] = {}
        self.stopping = False

    def _spawn(self, index: int) -> None:
        env = {**os.environ, **self.settings.as_env()}
        self.processes[index] = subprocess.Popen(
            [sys.executable, "-m", "gateway.worker", str(index)], env=env)

    def start(self) -> None:
        for index in range(self.settings.workers):
            self._spawn(index)

    async def supervise(self) -> None:
        """Replace a worker that dies; until then nftables sends its share of new
        connections to a closed port (refused, never forwarded)."""
        while not self.stopping:
            await asyncio.sleep(RESTART_CHECK)
            for index, process in list(self.processes.items()):
                if process.poll() is not None and not self.stopping:
                    logger.error("proxy worker %d exited with %s; restarting it", index,
                                 process.returncode)
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
