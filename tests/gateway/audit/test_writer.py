"""The batching writer: it spools while the database is away and replays in order; a full
queue slows the caller instead of dropping rows."""

from __future__ import annotations

import threading
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.engine import Engine

from gateway.audit.chain import verify
from gateway.audit.writer import AuditWriter, count_rows
from gateway.db import make_engine
from tests.gateway.audit.conftest import write


def test_unavailable_database_spools_then_replays(engine: Engine, tmp_path: Path) -> None:
    spool = tmp_path / "spool.jsonl"
    writer = AuditWriter(engine, gateway_id="gw1", spool=spool)
    writer.start()
    with engine.begin() as conn:  # the database stops taking audit rows
        conn.execute(text("ALTER TABLE audit_event RENAME TO audit_event_away"))
    for _ in range(25):
        writer.record(decision="allow", reason="r", protocol="dns")
    writer.flush()
    assert spool.exists() and len(spool.read_text().splitlines()) == 25
    with engine.begin() as conn:
        conn.execute(text("ALTER TABLE audit_event_away RENAME TO audit_event"))
    writer.close()
    # the next start replays the spool, in order, before anything new
    write(engine, 5, spool=spool)
    assert count_rows(engine) == 30 and not spool.exists()
    assert verify(engine).ok


def test_full_queue_slows_the_caller_instead_of_dropping(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'slow.db'}")
    writer = AuditWriter(engine, gateway_id="gw1", queue_size=10, batch_size=5)
    writer.start()
    blocker = engine.raw_connection()
    blocker.execute("BEGIN EXCLUSIVE")  # the database is stuck for a while
    done = threading.Event()

    def produce() -> None:
        for _ in range(60):
            writer.record(decision="allow", reason="r", protocol="dns")
        done.set()

    producer = threading.Thread(target=produce)
    producer.start()
    assert not done.wait(1.0)  # the producer is held back, not dropping
    blocker.rollback()
    blocker.close()
    assert done.wait(30)
    producer.join()
    writer.flush()
    writer.close()
    assert count_rows(engine) == 60
    engine.dispose()
