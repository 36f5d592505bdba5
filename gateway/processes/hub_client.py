"""A proxy worker's end of the hub: the data plane's Coordinator
(gateway.dataplane.coordinator), every call a message to the main process
(gateway.processes.protocol).

Audit rows are queued and sent together, one `Record` per turn of the event loop (or per
RECORDS_PER_MESSAGE rows), and the queue is sent before any other message: the main process
handles a worker's messages in order, so a connection's rows are in its audit writer before
the `Release` of that connection (or a quarantine, a spend, an acknowledgement) that
follows them. `close` sends what is still queued."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from dataclasses import asdict
from typing import Any

from gateway.approvals.ask import Ask, Outcome
from gateway.dataplane.coordinator import Credential
from gateway.processes import protocol
from gateway.processes.budgets import Allowance, Cap, Grant
from gateway.settings import Settings
from gateway.timing import ACTIVE_EVERY
from policies.schema import Limits, Narrow
from vault.secret import SecretValue

# A full batch goes at once: it bounds the message (and the main process's work on it).
RECORDS_PER_MESSAGE = 256


class HubClient:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._next = 0
        self._active: dict[str, float] = {}
        self._rows: list[list[Any]] = []      # audit rows not sent yet
        self._flush_soon = False               # a flush is scheduled for the loop's next turn

    @classmethod
    async def connect(cls, settings: Settings, index: int) -> HubClient:
        reader, writer = await asyncio.open_unix_connection(str(settings.hub_socket),
                                                            limit=2**24)
        client = cls(reader, writer)
        client.send(protocol.Hello(worker=index, pid=os.getpid()))
        return client

    def send(self, message: protocol.Message) -> None:
        """Any message but audit rows, after the rows queued before it."""
        if self._rows:
            self.flush()
        self.writer.write(protocol.encode(message))

    def flush(self) -> None:
        """Send the queued audit rows as one message."""
        if self._rows:
            rows, self._rows = self._rows, []
            self.writer.write(protocol.encode(protocol.Record(rows=rows)))

    def _flush_now(self) -> None:
        self._flush_soon = False
        self.flush()

    async def close(self) -> None:
        """Send what is queued, wait until the socket took it, close."""
        self.flush()
        with contextlib.suppress(ConnectionError):   # the main process is gone
            await self.writer.drain()
        self.writer.close()

    def _question_id(self) -> tuple[int, asyncio.Future[Any]]:
        self._next += 1
        future = asyncio.get_running_loop().create_future()
        self._pending[self._next] = future
        return self._next, future

    def answer(self, message: protocol.Answer) -> None:
        future = self._pending.pop(message.re, None)
        if future is not None and not future.done():
            future.set_result(message.value)

    # Coordinator
    async def acquire(self, sandbox_id: str, limit: int) -> bool:
        number, future = self._question_id()
        self.send(protocol.Acquire(id=number, sandbox=sandbox_id, limit=limit))
        return bool(await future)

    def release(self, sandbox_id: str) -> None:
        self.send(protocol.Release(sandbox=sandbox_id))

    async def admit(self, sandbox_id: str, rule: str, limits: Limits) -> bool:
        number, future = self._question_id()
        self.send(protocol.Admit(id=number, sandbox=sandbox_id, rule=rule, limits=limits))
        return bool(await future)

    def charge(self, sandbox_id: str, rule: str, limits: Limits, size: int) -> None:
        self.send(protocol.Charge(sandbox=sandbox_id, rule=rule, limits=limits, size=size))

    async def budget(self, sandbox_id: str, policy: str, caps: list[Cap],
                     expected: int, lease: int = 0) -> Allowance:
        number, future = self._question_id()
        self.send(protocol.BudgetAsk(id=number, sandbox=sandbox_id, policy=policy,
                                     caps=[asdict(c) for c in caps], expected=expected,
                                     lease=lease))
        return Allowance(**await future)

    async def lease(self, sandbox_id: str, policy: str, caps: list[Cap], want: int) -> Grant:
        number, future = self._question_id()
        self.send(protocol.Lease(id=number, sandbox=sandbox_id, policy=policy,
                                 caps=[asdict(c) for c in caps], want=want))
        return Grant(**await future)

    def unlease(self, sandbox_id: str, policy: str, caps: list[Cap], size: int,
                at: float) -> None:
        self.send(protocol.Unlease(sandbox=sandbox_id, policy=policy,
                                   caps=[asdict(c) for c in caps], size=size, at=at))

    def spend(self, sandbox_id: str, policy: str, caps: list[Cap], size: int) -> None:
        self.send(protocol.Spend(sandbox=sandbox_id, policy=policy,
                                 caps=[asdict(c) for c in caps], size=size))

    def quarantine(self, sandbox_id: str) -> None:
        self.send(protocol.Quarantine(sandbox=sandbox_id))

    async def name_for(self, sandbox_id: str, address: str) -> str | None:
        number, future = self._question_id()
        self.send(protocol.NameFor(id=number, sandbox=sandbox_id, address=address))
        name = await future
        return str(name) if name is not None else None

    def record(self, row: dict[str, Any]) -> None:
        self._rows.append(protocol.record_values(row))
        if len(self._rows) >= RECORDS_PER_MESSAGE:
            self.flush()
        elif not self._flush_soon:
            self._flush_soon = True
            asyncio.get_running_loop().call_soon(self._flush_now)

    async def approve(self, ask: Ask) -> Outcome:
        number, future = self._question_id()
        self.send(protocol.Approve(id=number, ask=ask))
        return Outcome(**await future)

    async def credential(self, secret: str, generation: str, narrow: Narrow | None,
                         sandbox_id: str) -> Credential:
        number, future = self._question_id()
        self.send(protocol.Mint(id=number, secret=secret, generation=generation,
                                narrow=narrow.model_dump(mode="json") if narrow else None,
                                sandbox=sandbox_id))
        answer = await future
        value = answer.get("value")
        return Credential(SecretValue(value) if isinstance(value, str) else None,
                          float(answer["fresh_until"]), answer.get("error"))

    async def drained(self) -> None:
        # Returns at once unless the socket's buffer is over its high-water mark: the main
        # process has stopped reading because its audit queue is full.
        with contextlib.suppress(ConnectionError):   # gone: this worker is stopping anyway
            await self.writer.drain()

    def active(self, sandbox_id: str) -> None:
        now = time.monotonic()
        if now - self._active.get(sandbox_id, 0.0) >= ACTIVE_EVERY:
            self._active[sandbox_id] = now
            self.send(protocol.Active(sandbox=sandbox_id))

    def forget(self, sandbox_id: str) -> None:
        self._active.pop(sandbox_id, None)
