"""The audit store: one row per egress attempt, written by a batching thread off the proxy's
event loop, and the queries the CLI and API share."""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import insert
from sqlalchemy.engine import Engine
from sqlmodel import Field, Session, SQLModel, col, select

logger = logging.getLogger(__name__)

FIELDS = ("id", "time", "sandbox_id", "policy", "policy_version", "rule", "decision", "reason",
          "protocol", "method", "scheme", "host", "port", "path", "status", "bytes_up",
          "bytes_down", "duration_ms", "upstream", "sni", "secrets", "error")


def utcnow() -> datetime:
    return datetime.now(UTC)


class AuditEvent(SQLModel, table=True):
    __tablename__ = "audit_event"

    id: int | None = Field(default=None, primary_key=True)
    time: datetime = Field(default_factory=utcnow, index=True)
    sandbox_id: str | None = Field(default=None, index=True)
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
    status: int | None = None
    bytes_up: int = 0
    bytes_down: int = 0
    duration_ms: float | None = None
    upstream: str | None = None
    sni: str | None = None
    secrets: str | None = None      # names (never values) of secrets injected or caught
    error: str | None = None

    def as_json(self) -> dict[str, Any]:
        data = {name: getattr(self, name) for name in FIELDS}
        data["time"] = self.time.replace(tzinfo=UTC).isoformat(timespec="microseconds")
        return data


# column -> value when not given (id is assigned by the database)
COLUMNS: dict[str, Any] = {name: None for name in FIELDS if name != "id"}
COLUMNS.update(bytes_up=0, bytes_down=0)

_STOP = object()


@dataclass
class _Flush:
    done: threading.Event


class AuditWriter:
    """Batches rows into the database from one thread. `record` never blocks the proxy for
    longer than a queue put; `flush` waits until every row recorded before it is stored."""

    def __init__(self, engine: Engine, *, batch_size: int = 500, interval: float = 0.05) -> None:
        self._engine = engine
        self._queue: queue.Queue[Any] = queue.Queue()
        self._batch_size = batch_size
        self._interval = interval
        self._thread = threading.Thread(target=self._run, name="audit-writer", daemon=True)
        self.written = 0

    def start(self) -> None:
        self._thread.start()

    def record(self, **fields: Any) -> None:
        unknown = fields.keys() - COLUMNS.keys()
        if unknown:
            raise TypeError(f"unknown audit fields {sorted(unknown)}")
        # Every row carries every column: a batch insert takes its columns from the first row.
        row = {**COLUMNS, "time": utcnow(), **fields}
        self._queue.put(row)

    def flush(self, timeout: float = 10.0) -> bool:
        marker = _Flush(threading.Event())
        self._queue.put(marker)
        return marker.done.wait(timeout)

    def close(self) -> None:
        if self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join(timeout=30)

    def _run(self) -> None:
        stop = False
        while not stop:
            rows, markers, stop = self._collect()
            self._write(rows)
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

    def _write(self, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        for attempt in range(5):
            try:
                with self._engine.begin() as conn:
                    conn.execute(insert(AuditEvent), rows)
                self.written += len(rows)
                return
            except Exception:
                logger.exception("audit write failed (attempt %d of 5)", attempt + 1)
                threading.Event().wait(0.2 * (attempt + 1))
        logger.error("audit: %d rows could not be written", len(rows))


@dataclass(frozen=True, slots=True)
class AuditQuery:
    sandbox_id: str | None = None
    host: str | None = None
    decision: str | None = None
    limit: int = 100


def query(engine: Engine, q: AuditQuery) -> list[AuditEvent]:
    """The newest rows matching `q`, oldest first."""
    stmt = select(AuditEvent)
    if q.sandbox_id:
        stmt = stmt.where(AuditEvent.sandbox_id == q.sandbox_id)
    if q.host:
        stmt = stmt.where(AuditEvent.host == q.host.lower().rstrip("."))
    if q.decision:
        stmt = stmt.where(AuditEvent.decision == q.decision)
    stmt = stmt.order_by(col(AuditEvent.id).desc()).limit(q.limit)
    with Session(engine) as session:
        rows = list(session.exec(stmt).all())
    rows.reverse()
    return rows
