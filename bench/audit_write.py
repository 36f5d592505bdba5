"""Audit writer throughput: rows per second through the batching, hash-chaining writer, for
SQLite and PostgreSQL, beside a plain bulk insert of the same rows into the same database
(the baseline: what the database itself takes), in one invocation.

    .venv/bin/python bench/audit_write.py [--rows N]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from common import report
from sqlalchemy import insert, text

from gateway.audit.models import COLUMNS, AuditEvent
from gateway.audit.writer import AuditWriter
from gateway.clock import utcnow
from gateway.db import make_engine
from tests.postgres import postgres_server


def row(i: int) -> dict[str, object]:
    return {**COLUMNS, "time": utcnow(), "decision": "allow", "reason": "allowed_by_rule",
            "protocol": "http", "method": "GET", "host": f"api{i % 50}.example.test",
            "port": 443, "path": f"/v1/items/{i}", "status": 200, "sandbox_id": "bench",
            "bytes_up": 120, "bytes_down": 4096, "duration_ms": 1.5}


def through_writer(url: str, count: int) -> float:
    engine = make_engine(url)
    writer = AuditWriter(engine, gateway_id="bench")
    writer.start()
    start = time.perf_counter()
    for i in range(count):
        writer.record(**{k: v for k, v in row(i).items() if v is not None and k != "time"})
    writer.flush(timeout=600)
    elapsed = time.perf_counter() - start
    writer.close()
    engine.dispose()
    return count / elapsed


def plain_insert(url: str, count: int) -> float:
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM audit_event"))
    rows = [row(i) for i in range(count)]
    start = time.perf_counter()
    for offset in range(0, count, 500):
        with engine.begin() as conn:
            conn.execute(insert(AuditEvent), rows[offset:offset + 500])
    elapsed = time.perf_counter() - start
    engine.dispose()
    return count / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=50_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sandgate-bench-audit-") as tmp:
        sqlite = f"sqlite:///{Path(tmp) / 'audit.db'}"
        results = {"sqlite": (plain_insert(sqlite, args.rows), through_writer(sqlite, args.rows))}
    with postgres_server() as url:
        results["postgresql"] = (plain_insert(url, args.rows), through_writer(url, args.rows))
    for name, (plain, writer) in results.items():
        report(f"audit_write_{name}_rows_per_s", round(writer))
        report(f"audit_plain_insert_{name}_rows_per_s", round(plain))
        report(f"audit_writer_vs_plain_{name}_ratio", round(writer / plain, 2))


if __name__ == "__main__":
    main()
