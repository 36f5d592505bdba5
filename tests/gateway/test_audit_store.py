"""The audit store against SQLite and a real PostgreSQL: the chain detects every kind of
tampering, the writer loses nothing when the database is slow or gone, and migrations keep
old rows."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine

from gateway.audit import query as audit_query
from gateway.audit.chain import HeadSigner, apply_retention, record_signed_head, verify
from gateway.audit.writer import AuditWriter, count_rows
from gateway.db import make_engine, upgrade


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


def test_intact_chain_verifies_and_resumes_across_writers(engine: Engine) -> None:
    write(engine, 30)
    write(engine, 20)  # a restarted gateway continues its chain
    write(engine, 5, gateway_id="gw2")
    report = verify(engine)
    assert report.ok
    assert [(c.gateway_id, c.rows, c.head_seq) for c in report.chains] == [
        ("gw1", 50, 50), ("gw2", 5, 5)]


def test_changed_row_is_named(engine: Engine) -> None:
    write(engine, 20)
    with engine.begin() as conn:
        conn.execute(text("UPDATE audit_event SET decision='allow' WHERE seq=7"))
    assert "seq 7) was changed" in (problem(engine) or "")


def test_deleted_row_is_named(engine: Engine) -> None:
    write(engine, 20)
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM audit_event WHERE seq IN (11, 12)"))
    assert (problem(engine) or "").startswith("seq 11 to 12 of gateway gw1 deleted")


def test_reordered_rows_are_detected(engine: Engine) -> None:
    write(engine, 20)
    with engine.begin() as conn:  # swap the positions of rows 5 and 6
        conn.execute(text("UPDATE audit_event SET seq=-5 WHERE seq=5"))
        conn.execute(text("UPDATE audit_event SET seq=5 WHERE seq=6"))
        conn.execute(text("UPDATE audit_event SET seq=6 WHERE seq=-5"))
    assert "seq 5) does not follow" in (problem(engine) or "")


def test_truncation_is_caught_by_a_signed_head(engine: Engine, tmp_path: Path) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    signer = HeadSigner(Ed25519PrivateKey.generate())
    writer = write(engine, 20)
    record_signed_head(engine, signer, "gw1", *writer.head)
    public = signer._key.public_key()
    assert verify(engine, public).ok
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM audit_event WHERE seq > 15"))
    report = verify(engine, public)
    assert "ends at seq 15, but seq 20 was signed" in (report.chains[0].problem or "")


def test_forged_signature_is_caught(engine: Engine) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    writer = write(engine, 5)
    record_signed_head(engine, HeadSigner(Ed25519PrivateKey.generate()), "gw1", *writer.head)
    other = Ed25519PrivateKey.generate().public_key()
    assert "bad signature" in (verify(engine, other).chains[0].problem or "")


def test_retention_keeps_the_rest_verifiable(engine: Engine) -> None:
    write(engine, 10)
    with engine.begin() as conn:  # the first six rows are old
        conn.execute(text("UPDATE audit_event SET time = :t WHERE seq <= 6"),
                     {"t": (datetime.now(UTC) - timedelta(days=40)).strftime("%Y-%m-%d %H:%M:%S")})
    assert apply_retention(engine, 30) == 6
    report = verify(engine)
    assert report.ok and report.chains[0].rows == 4
    write(engine, 3)
    assert verify(engine).chains[0].head_seq == 13


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


def test_migration_keeps_old_rows(database_url: str) -> None:
    engine = make_engine(database_url, migrate=False)
    upgrade(engine, "0001")
    with engine.begin() as conn:
        conn.execute(text(
            "INSERT INTO audit_event (time, decision, reason, protocol, host, bytes_up, "
            "bytes_down) VALUES ('2026-01-01 00:00:00', 'deny', 'no_matching_rule', 'dns', "
            "'old.test', 0, 0)"))
    upgrade(engine)
    rows = audit_query.latest(engine, audit_query.AuditFilter())
    assert [(r.host, r.decision, r.gateway_id, r.hash) for r in rows] == [
        ("old.test", "deny", None, None)]
    write(engine, 3)
    report = verify(engine)
    assert report.ok and report.unchained == 1
    engine.dispose()


def test_filters_cursor_and_summary(engine: Engine) -> None:
    write(engine, 12, secrets="API_TOKEN,OTHER")
    f = audit_query.AuditFilter
    assert len(audit_query.latest(engine, f(host="h1.test"))) == 3
    assert len(audit_query.latest(engine, f(host="*.test"))) == 12
    assert len(audit_query.latest(engine, f(host="h*"))) == 12
    assert {r.decision for r in audit_query.latest(engine, f(decision="deny"))} == {"deny"}
    assert len(audit_query.latest(engine, f(status=403))) == 4
    assert len(audit_query.latest(engine, f(rule="rule1", sandbox_id="sb1"))) == 6
    assert len(audit_query.latest(engine, f(secret="OTHER"))) == 12
    assert audit_query.latest(engine, f(secret="API")) == []
    since = audit_query.parse_time("1h")
    assert len(audit_query.latest(engine, f(since=since))) == 12
    assert audit_query.latest(engine, f(until=since)) == []
    seen, cursor = [], None
    while True:
        rows, cursor = audit_query.page(engine, f(after_id=cursor, limit=5))
        seen += [r.seq for r in rows]
        if cursor is None:
            break
    assert seen == list(range(1, 13))
    summary = audit_query.summary(engine, f())
    assert summary["per_decision"] == [{"decision": "allow", "count": 8},
                                       {"decision": "deny", "count": 4}]
    assert {r["host"] for r in summary["top_denied_hosts"]} == {"h0.test", "h3.test",
                                                               "h2.test", "h1.test"}


def test_export_shapes(engine: Engine) -> None:
    write(engine, 2)
    rows = [r.as_json() for r in audit_query.latest(engine, audit_query.AuditFilter())]
    csv_text = audit_query.to_csv(rows)
    assert csv_text.splitlines()[0].startswith("id,time,gateway_id,seq,")
    assert len(csv_text.splitlines()) == 3
    ocsf = audit_query.to_ocsf(rows[0])
    assert (ocsf["class_uid"], ocsf["category_uid"], ocsf["disposition"]) == \
        (4002, 4, "Blocked")
    assert ocsf["http_request"]["url"]["hostname"] == "h0.test"
    assert ocsf["metadata"]["uid"] == "gw1:1"
    assert isinstance(ocsf["time"], int) and abs(ocsf["time"] / 1000 - time.time()) < 60
