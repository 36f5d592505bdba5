"""Background work on an interval: run a blocking call in a thread every so often, forever;
a failure is logged and the next round tries again."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

logger = logging.getLogger(__name__)


async def every(seconds: float, work: Callable[[], object], failure: str) -> None:
    while True:
        await asyncio.sleep(seconds)
        try:
            await asyncio.to_thread(work)
        except Exception:
            logger.exception(failure)
