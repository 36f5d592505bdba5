"""The audit store: one row per egress attempt, chained by hash per gateway, written by one
batching thread off the proxy's event loop.

Guarantee (docs/AUDIT.md): `record` returns once the row is in a bounded in-memory queue;
when the queue is full, `record` waits, so the proxy slows down instead of dropping. The
writer commits batches every 50 ms; if the database fails, batches go to an append-only
spool file (fsync'd) and are replayed, in order, once the database is back (and at start-up).
A row is durable once committed or spooled; a `kill -9` can lose only rows recorded in the
last second before it.
"""

from __future__ import annotations

import hashlib
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
from sqlmodel import Field, Session, SQLModel, select

logger = logging.getLogger(__name__)

FIELDS = ("id", "time", "gateway_id", "seq", "sandbox_id", "owner", "policy",
          "policy_version", "rule", "decision", "reason", "protocol", "method", "scheme",
          "host", "port", "path", "query", "request_headers", "response_headers", "status",
          "bytes_up", "bytes_down", "duration_ms", "upstream", "sni", "secrets", "error",
          "prev_hash", "hash")
CHAINED = tuple(f for f in FIELDS if f not in ("id", "hash"))
GENESIS = "0" * 64
QUEUE_SIZE = 10_000


def utcnow() -> datetime:
    return datetime.now(UTC)


class AuditEvent(SQLModel, table=True):
    __tablename__ = "audit_event"

    id: int | None = Field(default=None, primary_key=True)
    time: datetime = Field(default_factory=utcnow, index=True)
    gateway_id: str | None = None
    seq: int | None = None
    sandbox_id: str | None = Field(default=None, index=True)
    owner: str | None = None
    policy: str | None = None
    policy_version: str | None = None
    rule: str | None = None
    decision: str = Field(index=True)
    reason: str
    protocol: str
    method: str | None = None
    scheme: str | None = None
    host: str | None = Field(default=None, index=True)
    port: int | None = None
    path: str | None = None
    query: str | None = None            # redacted: no secret or placeholder values
    request_headers: str | None = None  # JSON list: names, values only where allow-listed
    response_headers: str | None = None
    status: int | None = None
    bytes_up: int = 0
    bytes_down: int = 0
    duration_ms: float | None = None
    upstream: str | None = None
    sni: str | None = None
    secrets: str | None = None          # names (never values) of secrets injected or caught
    error: str | None = None
    prev_hash: str | None = None
    hash: str | None = None

    def as_json(self) -> dict[str, Any]:
        data = {name: getattr(self, name) for name in FIELDS}
        data["time"] = time_text(self.time) + "Z"
        return data


class AuditHead(SQLModel, table=True):
    """A signed chain head (third-party verifiable) or a retention checkpoint (where the
    chain resumes after old rows were deleted on purpose)."""

    __tablename__ = "audit_head"

    id: int | None = Field(default=None, primary_key=True)
    gateway_id: str = Field(index=True)
    kind: str                 # signed | checkpoint
    seq: int
    hash: str
    signature: str | None = None
    created_at: datetime = Field(default_factory=utcnow)


def time_text(value: datetime) -> str:
    """UTC, microseconds, no zone suffix: the same text whatever the database returns."""
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return value.isoformat(timespec="microseconds")


def _canonical(row: dict[str, Any]) -> bytes:
    data = {name: row.get(name) for name in CHAINED}
    data["time"] = time_text(data["time"]) if isinstance(data["time"], datetime) else data["time"]
    return json.dumps(data, sort_keys=True, separators=(",", ":")).encode()


def row_hash(row: dict[str, Any]) -> str:
    """The hash of a row: over every field but id and hash, prev_hash included."""
    return hashlib.sha256(_canonical(row)).hexdigest()


# column -> value when not given (id is assigned by the database)
COLUMNS: dict[str, Any] = {name: None for name in FIELDS if name != "id"}
COLUMNS.update(bytes_up=0, bytes_down=0)

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

    def start(self) -> None:
        self._replay()
        self._seq, self._hash = chain_tip(self._engine, self.gateway_id)
        self._thread.start()

    @property
    def head(self) -> tuple[int, str]:
        return self._seq, self._hash

    def record(self, **fields: Any) -> None:
        unknown = fields.keys() - COLUMNS.keys()
        if unknown:
            raise TypeError(f"unknown audit fields {sorted(unknown)}")
        # Every row carries every column: a batch insert takes its columns from the first row.
        self._queue.put({**COLUMNS, "time": utcnow(), **fields})  # blocks when full

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
