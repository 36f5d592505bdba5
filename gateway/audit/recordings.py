"""The recorded requests `policy learn` and `policy replay` read: audit rows, oldest first,
turned into policies.recorded.Recorded (rows that record no request the policy judged are
left out)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime

from sqlalchemy.engine import Engine

from gateway.audit.query import AuditFilter, iterate
from policies.recorded import Recorded, from_row

MAX_ROWS = 500_000   # read at most this many rows in one go; the caller says so when cut


def recordings(engine: Engine, *, since: datetime | None = None,
               sandboxes: Sequence[str] = (), max_rows: int = MAX_ROWS
               ) -> tuple[list[Recorded], bool]:
    """The recorded requests since `since` of `sandboxes` (all when empty), and whether
    `max_rows` cut the reading short."""
    filters = [AuditFilter(since=since, sandbox_id=s) for s in sandboxes] or \
        [AuditFilter(since=since)]
    found: list[Recorded] = []
    read = 0
    for f in filters:
        for row in iterate(engine, replace(f, limit=1000)):
            read += 1
            if read > max_rows:
                return found, True
            record = from_row(row.as_json())
            if record is not None:
                found.append(record)
    found.sort(key=lambda r: r.time)
    return found, False
