"""OpenTelemetry log export (OTLP/HTTP, JSON encoding) of audit rows, when an endpoint is
configured. Best effort and off the writer's path: the database stays the record."""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import asdict
from datetime import datetime
from typing import Any

import httpx

from gateway.audit.heads import Head
from gateway.audit.models import time_text

logger = logging.getLogger(__name__)

_INT_FIELDS = ("port", "status", "bytes_up", "bytes_down", "seq")


def _value(value: Any) -> dict[str, Any]:
    if isinstance(value, bool):
        return {"boolValue": value}
    if isinstance(value, int):
        return {"intValue": str(value)}
    if isinstance(value, float):
        return {"doubleValue": value}
    return {"stringValue": str(value)}


def log_record(row: dict[str, Any]) -> dict[str, Any]:
    when: datetime = row["time"]
    nanos = int(datetime.fromisoformat(time_text(when) + "+00:00").timestamp() * 1e9)
    attributes = [{"key": f"sandgate.{k}", "value": _value(v)} for k, v in sorted(row.items())
                  if v is not None and k not in ("time",)]
    denied = row["decision"] not in ("allow", "would_deny")
    return {
        "timeUnixNano": str(nanos),
        "severityNumber": 13 if denied else 9,           # WARN / INFO
        "severityText": "WARN" if denied else "INFO",
        "body": {"stringValue": f"{row['decision']} {row['protocol']} {row['host']}:"
                                f"{row['port']} ({row['reason']})"},
        "attributes": attributes,
    }


def head_record(head: Head) -> dict[str, Any]:
    """A chain head as a log record: kept by the collector, out of the database's reach."""
    attributes = [{"key": f"sandgate.head.{k}", "value": _value(v)}
                  for k, v in asdict(head).items() if v is not None]
    return {
        "timeUnixNano": str(time.time_ns()),
        "severityNumber": 9,
        "severityText": "INFO",
        "body": {"stringValue": f"audit head {head.gateway_id} seq {head.seq} {head.hash}"},
        "attributes": attributes,
    }


def payload(rows: list[dict[str, Any]], gateway_id: str,
            heads: tuple[Head, ...] = ()) -> dict[str, Any]:
    records = [log_record(r) for r in rows] + [head_record(h) for h in heads]
    return {"resourceLogs": [{
        "resource": {"attributes": [
            {"key": "service.name", "value": {"stringValue": "sandgate"}},
            {"key": "sandgate.gateway_id", "value": {"stringValue": gateway_id}}]},
        "scopeLogs": [{"scope": {"name": "sandgate.audit"},
                       "logRecords": records}],
    }]}


class OtlpExporter:
    def __init__(self, endpoint: str, gateway_id: str) -> None:
        self.url = endpoint.rstrip("/") + "/v1/logs"
        self.gateway_id = gateway_id
        self._queue: queue.Queue[tuple[list[dict[str, Any]], tuple[Head, ...]] | None] = \
            queue.Queue(maxsize=1000)
        self._thread = threading.Thread(target=self._run, name="otlp-export", daemon=True)
        self._client = httpx.Client(timeout=5)
        self.sent = 0

    def start(self) -> None:
        self._thread.start()

    def submit(self, rows: list[dict[str, Any]]) -> None:
        try:
            self._queue.put_nowait(([dict(r) for r in rows], ()))
        except queue.Full:
            logger.warning("otlp: export queue full; %d rows not exported", len(rows))

    def submit_head(self, head: Head) -> None:
        try:
            self._queue.put_nowait(([], (head,)))
        except queue.Full:
            logger.warning("otlp: export queue full; head seq %d not exported", head.seq)

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=10)
        self._client.close()

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            rows, heads = item
            try:
                response = self._client.post(self.url,
                                             json=payload(rows, self.gateway_id, heads))
                response.raise_for_status()
                self.sent += len(rows)
            except httpx.HTTPError as e:
                logger.warning("otlp: export of %d rows to %s failed: %s", len(rows), self.url, e)
