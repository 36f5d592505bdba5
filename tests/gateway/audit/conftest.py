"""The audit tests' database (SQLite, and a real PostgreSQL) and a writer of sample rows."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine

from gateway.audit.chain import verify
from gateway.audit.writer import AuditWriter
from gateway.db import make_engine


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = make_engine(database_url)
    yield engine
    engine.dispose()


def write(engine: Engine, count: int, gateway_id: str = "gw1", spool: Path | None = None,
          **fields: object) -> AuditWriter:
    writer = AuditWriter(engine, gateway_id=gateway_id, spool=spool)
    writer.start()
    for i in range(count):
        writer.record(decision="allow" if i % 3 else "deny", reason="r", protocol="http",
                      host=f"h{i % 4}.test", port=443, status=200 if i % 3 else 403,
                      sandbox_id=f"sb{i % 2}", rule=f"rule{i % 2}", **fields)
    writer.flush()
    writer.close()
    return writer


def problem(engine: Engine) -> str | None:
    report = verify(engine)
    return next((c.problem for c in report.chains if c.problem), None)
