"""A worker's audit rows travel batched, one message per turn of its event loop, and never
behind a later message: over real Unix sockets, to a real hub and audit writer."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path
from typing import Any

from sqlmodel import Session, col, select

from gateway.audit.models import AuditEvent
from gateway.audit.writer import AuditWriter, count_rows
from gateway.dataplane.registry import Registry
from gateway.db import make_engine
from gateway.processes import protocol
from gateway.processes.authority import Authority
from gateway.processes.hub import Hub
from gateway.processes.hub_client import RECORDS_PER_MESSAGE, HubClient
from tests.doubles import RowSink


def _row(sandbox: str, n: int) -> dict[str, Any]:
    return {"time": time.time(), "sandbox_id": sandbox, "decision": "allow",
            "reason": "matched_rule", "protocol": "http", "port": n, "path": f"/{n}"}


async def _client(path: Path) -> HubClient:
    reader, writer = await asyncio.open_unix_connection(str(path))
    client = HubClient(reader, writer)
    client.send(protocol.Hello(worker=0, pid=1))
    return client


async def _answers(client: HubClient) -> None:
    """The worker's listener, as far as answers go."""
    while line := await client.reader.readline():
        message = protocol.decode(line)
        if isinstance(message, protocol.Answer):
            client.answer(message)


class _Listener:
    """A Unix socket server that keeps every message a client sends, in order."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.got: list[protocol.Message] = []
        self.closed = asyncio.Event()
        self.hang_up = False      # close each connection once its Hello is read

    async def start(self) -> asyncio.Server:
        return await asyncio.start_unix_server(self._serve, str(self.path), limit=2**24)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while line := await reader.readline():
            self.got.append(protocol.decode(line))
            if self.hang_up:
                break
        writer.close()
        self.closed.set()


def test_rows_of_one_turn_go_as_one_message_and_before_any_later_message(
        tmp_path: Path) -> None:
    async def scenario() -> list[protocol.Message]:
        listener = _Listener(tmp_path / "hub.sock")
        server = await listener.start()
        client = await _client(listener.path)
        for n in range(3):                       # one turn: one message
            client.record(_row("a", n))
        client.release("a")                      # goes after them
        client.record(_row("b", 3))
        await asyncio.sleep(0)                   # the turn ends: sent on its own
        await asyncio.sleep(0)
        for n in range(RECORDS_PER_MESSAGE + 1):  # a full batch goes at once
            client.record(_row("c", n))
        client.quarantine("c")
        await client.close()
        await listener.closed.wait()
        server.close()
        return listener.got

    hello, first, release, second, full, rest, quarantine = asyncio.run(scenario())
    assert isinstance(hello, protocol.Hello)
    assert isinstance(first, protocol.Record) and len(first.rows) == 3
    assert [protocol.record_row(v)["port"] for v in first.rows] == [0, 1, 2]
    assert release == protocol.Release(sandbox="a")
    assert isinstance(second, protocol.Record) and len(second.rows) == 1
    assert isinstance(full, protocol.Record) and len(full.rows) == RECORDS_PER_MESSAGE
    assert isinstance(rest, protocol.Record) and len(rest.rows) == 1
    assert protocol.record_row(rest.rows[0])["port"] == RECORDS_PER_MESSAGE
    assert quarantine == protocol.Quarantine(sandbox="c")


def test_a_row_travels_compact_and_comes_back_whole() -> None:
    row = _row("a", 443) | {"owner": "tok-1", "bytes_up": 12}
    values = protocol.record_values(row)
    assert len(values) == len(protocol.RECORD_COLUMNS)
    back = protocol.record_row(values)
    assert {k: back[k] for k in row} == row
    assert back["bytes_down"] == 0 and back["status"] is None   # the audit log's defaults
    try:
        protocol.record_values({**row, "no_such_column": 1})
    except TypeError as e:
        assert "no_such_column" in str(e)
    else:
        raise AssertionError("an unknown column was taken")


class _Watching(Authority):
    """The real authority, noting which rows the audit writer had at each release and
    quarantine (what a deletion waiting for the count to drop would find)."""

    def __init__(self, registry: Registry, sink: RowSink) -> None:
        super().__init__(registry)
        self.sink = sink
        self.seen: list[tuple[str, str, int]] = []   # (what, sandbox, its rows in the writer)

    def _rows_of(self, sandbox_id: str) -> int:
        return sum(1 for row in self.sink.rows if row["sandbox_id"] == sandbox_id)

    def release_for(self, holder: str, sandbox_id: str) -> None:
        self.seen.append(("release", sandbox_id, self._rows_of(sandbox_id)))
        super().release_for(holder, sandbox_id)

    def quarantine(self, sandbox_id: str) -> None:
        self.seen.append(("quarantine", sandbox_id, self._rows_of(sandbox_id)))
        super().quarantine(sandbox_id)


def test_a_connections_rows_are_in_the_writer_before_its_release(tmp_path: Path) -> None:
    """Connections whose rows and releases share turns of the worker's loop (and batches)
    with other connections' rows: at each release and quarantine, the hub has handed every
    row recorded before it to the audit writer."""
    sink = RowSink()
    registry = Registry()
    authority = _Watching(registry, sink)
    hub = Hub(authority, sink, registry, tmp_path / "hub.sock")  # type: ignore[arg-type]
    recorded: Counter[str] = Counter()
    expected: list[tuple[str, str, int]] = []

    async def scenario() -> None:
        await hub.start()
        client = await _client(hub.path)
        answers = asyncio.ensure_future(_answers(client))
        for n in range(60):
            sandbox = f"s{n % 7}"
            assert await client.acquire(sandbox, 100)
            for _ in range(n % 4 + 1):
                client.record(_row(sandbox, n))
                recorded[sandbox] += 1
            if n % 3 == 0:
                client.release(sandbox)
                expected.append(("release", sandbox, recorded[sandbox]))
            if n % 11 == 0:
                client.quarantine(sandbox)
                expected.append(("quarantine", sandbox, recorded[sandbox]))
            if n % 5 == 0:
                await asyncio.sleep(0)
        await client.close()
        await answers
        await hub.close(timeout=5)

    asyncio.run(scenario())
    assert authority.seen == expected
    assert len(sink.rows) == sum(recorded.values())


def test_no_row_is_lost_when_the_worker_closes_at_once(tmp_path: Path) -> None:
    """Rows recorded right before close (no turn of the loop in between) and more rows than
    the writer's queue holds (the hub waits for room): all written, in the order recorded."""
    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    writer = AuditWriter(engine, gateway_id="g", queue_size=50)
    writer.start()
    registry = Registry()
    hub = Hub(Authority(registry), writer, registry, tmp_path / "hub.sock")

    async def scenario() -> None:
        await hub.start()
        client = await _client(hub.path)
        assert isinstance(protocol.decode(await client.reader.readline()), protocol.Synced)
        for n in range(1000):
            client.record(_row("s", n))
        await client.close()
        await hub.close(timeout=10)

    asyncio.run(scenario())
    assert writer.flush()
    writer.close()
    assert count_rows(engine) == 1000
    with Session(engine) as session:
        ports = session.exec(select(AuditEvent.port).order_by(col(AuditEvent.seq))).all()
    assert ports == list(range(1000))
    engine.dispose()


def test_after_the_main_process_hangs_up_the_worker_goes_on_to_its_shut_down(
        tmp_path: Path) -> None:
    """As before batching: once the hub is gone (the worker's listener sees the end and
    stops the proxy), what the worker still records and sends raises nothing, and its
    close returns."""
    async def scenario() -> None:
        listener = _Listener(tmp_path / "hub.sock")
        listener.hang_up = True
        server = await listener.start()
        client = await _client(listener.path)
        await listener.closed.wait()
        assert await client.reader.readline() == b""     # what the worker's listener sees
        for n in range(10):
            client.record(_row("s", n))
            client.release("s")
            await asyncio.sleep(0)
        client.record(_row("s", 10))
        await client.drained()
        await client.close()
        server.close()

    asyncio.run(asyncio.wait_for(scenario(), timeout=10))
