"""The audit store: one row per egress attempt, chained by hash per gateway, written by one
batching thread off the proxy's event loop.

Guarantee (docs/AUDIT.md): `record` returns once the row is in a bounded in-memory queue;
when the queue is full, `record` waits, so the proxy slows down instead of dropping. Event
loops use `offer`, which never waits: the hub then waits for room off the loop, for that
worker alone; the DNS server throttles the sandbox (gateway.dataplane.dns_throttle). The
writer commits batches every 50 ms; if the database fails, batches go to an append-only
spool file (fsync'd) and are replayed, in order, once the database is back (and at start-up).
A row is durable once committed or spooled; a `kill -9` can lose only rows recorded in the
last second before it.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import func, insert
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from gateway.audit.models import COLUMNS, GENESIS, AuditEvent, AuditHead, row_hash, time_text
from gateway.clock import utcnow

logger = logging.getLogger(__name__)

QUEUE_SIZE = 10_000


_STOP = object()


@dataclass
class _Flush:
    done: threading.Event


class Spool:
    """Append-only JSON-lines file of rows the database could not take (yet)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def append(self, rows: list[dict[str, Any]]) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps({**row, "time": time_text(row["time"])}) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def __bool__(self) -> bool:
        return self.path.exists() and self.path.stat().st_size > 0

    def rows(self) -> Iterator[dict[str, Any]]:
        with open(self.path, encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    row = json.loads(line)
                    row["time"] = datetime.fromisoformat(row["time"]).replace(tzinfo=UTC)
                    yield row

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)


def chain_tip(engine: Engine, gateway_id: str) -> tuple[int, str]:
    """(last seq, last hash) of a gateway's chain in the database."""
    with Session(engine) as session:
        row = session.exec(select(AuditEvent.seq, AuditEvent.hash)
                           .where(AuditEvent.gateway_id == gateway_id)
                           .order_by(AuditEvent.seq.desc()).limit(1)).first()  # type: ignore[union-attr]
        if row is not None and row[0] is not None:
            return int(row[0]), str(row[1])
        head = session.exec(select(AuditHead).where(AuditHead.gateway_id == gateway_id,
                                                    AuditHead.kind == "checkpoint")
                            .order_by(AuditHead.seq.desc()).limit(1)).first()  # type: ignore[attr-defined]
        return (head.seq, head.hash) if head else (0, GENESIS)


class AuditWriter:
    def __init__(self, engine: Engine, *, gateway_id: str = "local",
                 spool: Path | None = None, batch_size: int = 500, interval: float = 0.05,
                 queue_size: int = QUEUE_SIZE) -> None:
        self._engine = engine
        self.gateway_id = gateway_id
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=queue_size)
        self._batch_size = batch_size
        self._interval = interval
        self._spool = Spool(spool) if spool else None
        self._thread = threading.Thread(target=self._run, name="audit-writer", daemon=True)
        self._seq, self._hash = 0, GENESIS
        self._spooling = False
        self._last_replay = 0.0
        self.after_commit: list[Callable[[list[dict[str, Any]]], None]] = []
        self.written = 0

    def start(self, published: tuple[int, str] | None = None) -> None:
        """`published`: the last head this gateway published outside the database. When the
        database ends before it (its end was cut off), the chain goes on from that head, so
        the missing rows stay a visible gap instead of being written over."""
        self._replay()
        self._seq, self._hash = chain_tip(self._engine, self.gateway_id)
        if published is not None and published[0] > self._seq:
            logger.error("audit: the database ends at seq %d of gateway %s, but seq %d was "
                         "published: rows were deleted; the chain continues after seq %d",
                         self._seq, self.gateway_id, published[0], published[0])
            self._seq, self._hash = published
        self._thread.start()

    @property
    def head(self) -> tuple[int, str]:
        return self._seq, self._hash

    def record(self, **fields: Any) -> None:
        """Queue a row; waits while the queue is full (never call it on an event loop)."""
        self._queue.put(self._row(fields))  # blocks when full

    def offer(self, **fields: Any) -> bool:
        """Queue a row unless the queue is full; never waits (for event loops)."""
        try:
            self._queue.put_nowait(self._row(fields))
        except queue.Full:
            return False
        return True

    def has_room(self) -> bool:
        return not self._queue.full()

    @staticmethod
    def _row(fields: dict[str, Any]) -> dict[str, Any]:
        unknown = fields.keys() - COLUMNS.keys()
        if unknown:
            raise TypeError(f"unknown audit fields {sorted(unknown)}")
        # Every row carries every column: a batch insert takes its columns from the first row.
        return {**COLUMNS, "time": utcnow(), **fields}

    def flush(self, timeout: float = 10.0) -> bool:
        marker = _Flush(threading.Event())
        self._queue.put(marker)
        return marker.done.wait(timeout)

    def close(self) -> None:
        if self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join(timeout=60)

    def _run(self) -> None:
        stop = False
        while not stop:
            rows, markers, stop = self._collect()
            self._chain(rows)
            self._store(rows)
            for marker in markers:
                marker.done.set()

    def _collect(self) -> tuple[list[dict[str, Any]], list[_Flush], bool]:
        """One batch: block for the first item, then gather more for up to `interval`
        (no waiting once somebody asked for a flush)."""
        rows: list[dict[str, Any]] = []
        markers: list[_Flush] = []
        item = self._queue.get()
        deadline = time.monotonic() + self._interval
        while True:
            if item is _STOP:
                return rows, markers, True
            if isinstance(item, _Flush):
                markers.append(item)
            else:
                rows.append(item)
            if len(rows) >= self._batch_size:
                return rows, markers, False
            wait = 0.0 if markers else deadline - time.monotonic()
            try:
                item = self._queue.get(timeout=wait) if wait > 0 else self._queue.get_nowait()
            except queue.Empty:
                return rows, markers, False

    def _chain(self, rows: list[dict[str, Any]]) -> None:
        for row in rows:
            self._seq += 1
            row.update(gateway_id=self.gateway_id, seq=self._seq, prev_hash=self._hash)
            row["hash"] = self._hash = row_hash(row)

    def _store(self, rows: list[dict[str, Any]]) -> None:
        if self._spooling and time.monotonic() - self._last_replay > 5:
            self._replay()
        if rows and not self._spooling and self._insert(rows):
            self.written += len(rows)
            for callback in self.after_commit:
                callback(rows)
            return
        if rows:
            if self._spool is None:
                logger.error("audit: database unavailable and no spool: %d rows lost", len(rows))
                return
            self._spooling = True
            self._spool.append(rows)

    def _insert(self, rows: list[dict[str, Any]]) -> bool:
        try:
            with self._engine.begin() as conn:
                conn.execute(insert(AuditEvent), rows)
            return True
        except Exception:
            logger.exception("audit: database write failed; spooling %d rows", len(rows))
            return False

    def _replay(self) -> None:
        """Move spooled rows into the database, in order; rows already there are skipped."""
        self._last_replay = time.monotonic()
        if self._spool is None or not self._spool:
            self._spooling = False
            return
        try:
            batch: list[dict[str, Any]] = []
            for row in self._spool.rows():
                batch.append(row)
                if len(batch) >= self._batch_size:
                    self._insert_skipping_present(batch)
                    batch = []
            self._insert_skipping_present(batch)
        except Exception:
            logger.exception("audit: spool replay failed; will retry")
            self._spooling = True
            return
        self._spool.clear()
        self._spooling = False
        logger.info("audit: spool replayed")

    def _insert_skipping_present(self, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        try:
            with self._engine.begin() as conn:
                conn.execute(insert(AuditEvent), rows)
        except IntegrityError:  # part of it went in before a crash: go row by row
            for row in rows:
                try:
                    with self._engine.begin() as conn:
                        conn.execute(insert(AuditEvent), [row])
                except IntegrityError:
                    continue
        self.written += len(rows)


def count_rows(engine: Engine) -> int:
    with Session(engine) as session:
        return int(session.exec(select(func.count()).select_from(AuditEvent)).one())
