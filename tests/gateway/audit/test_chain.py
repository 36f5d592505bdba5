"""The hash chain against a hostile database administrator: every tamper case of
docs/AUDIT.md ("What a database administrator can hide"), each shown caught by the database
alone where it can be, and by heads kept outside it where it cannot; on SQLite and
PostgreSQL. Retention keeps the rest verifiable."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from gateway.audit.chain import VerifyReport, apply_retention, verify
from gateway.audit.heads import CHECKPOINT, HeadsFile, HeadSigner, make_head, record_signed_head
from gateway.audit.models import CHAINED, GENESIS, AuditEvent, AuditHead, row_hash
from gateway.audit.writer import AuditWriter
from tests.gateway.audit.conftest import problem, write


@pytest.fixture
def signer() -> HeadSigner:
    return HeadSigner(Ed25519PrivateKey.generate())


def publish(engine: Engine, signer: HeadSigner, writer: AuditWriter, heads: Path) -> None:
    """What a running gateway does: its head signed into the database and out to a file."""
    record_signed_head(engine, signer, writer.gateway_id, *writer.head)
    HeadsFile(heads).append(make_head(signer, writer.gateway_id, *writer.head))


def tamper(engine: Engine, statement: str, **params: object) -> None:
    """An administrator's statement, run straight on the database."""
    with engine.begin() as conn:
        conn.execute(text(statement), params)


def rechain(engine: Engine, gateway_id: str) -> None:
    """An administrator who knows the algorithm: seq renumbered from 1 and every hash
    recomputed, so the database alone looks intact."""
    with Session(engine) as session:
        rows = session.exec(select(AuditEvent).where(AuditEvent.gateway_id == gateway_id)
                            .order_by(col(AuditEvent.seq))).all()
        for row in rows:   # out of the way of the unique (gateway, seq) index first
            row.seq = -(row.seq or 0)
        session.flush()
        prev = GENESIS
        for seq, row in enumerate(rows, 1):
            row.seq, row.prev_hash = seq, prev
            row.hash = prev = row_hash(row.model_dump())
        session.commit()


def tampered(report: VerifyReport) -> str:
    return next((c.problem for c in report.chains if c.problem), "") or ""


def checked(engine: Engine, signer: HeadSigner, heads: Path | None = None) -> str:
    outside = {"heads.jsonl": list(HeadsFile(heads).heads())} if heads else None
    return tampered(verify(engine, signer.public_key, outside))


def test_intact_chain_verifies_and_resumes_across_writers(engine: Engine) -> None:
    write(engine, 30)
    write(engine, 20)  # a restarted gateway continues its chain
    write(engine, 5, gateway_id="gw2")
    report = verify(engine)
    assert report.ok
    assert [(c.gateway_id, c.rows, c.head_seq) for c in report.chains] == [
        ("gw1", 50, 50), ("gw2", 5, 5)]


def test_edited_row_is_named_by_the_database_alone(engine: Engine) -> None:
    write(engine, 20)
    tamper(engine, "UPDATE audit_event SET decision='allow' WHERE seq=7")
    assert "seq 7) was changed" in (problem(engine) or "")


def test_edited_row_with_every_hash_recomputed_is_caught_by_signed_heads(
        engine: Engine, signer: HeadSigner, tmp_path: Path) -> None:
    heads = tmp_path / "heads.jsonl"
    publish(engine, signer, write(engine, 20), heads)
    tamper(engine, "UPDATE audit_event SET host='innocent.test' WHERE seq=7")
    rechain(engine, "gw1")
    assert "differs from the head in the database" in checked(engine, signer)
    # the head's hash rewritten too
    tamper(engine, "UPDATE audit_head SET hash = :h", h=_hash_of(engine, 20))
    assert verify(engine).ok                      # without the key it looks intact
    assert "not signed by the audit key" in checked(engine, signer)
    tamper(engine, "DELETE FROM audit_head")      # ... so the heads go
    assert checked(engine, signer) == ""
    assert "differs from the head in heads.jsonl" in checked(engine, signer, heads)


def test_deleted_middle_row_is_named(engine: Engine, signer: HeadSigner,
                                     tmp_path: Path) -> None:
    heads = tmp_path / "heads.jsonl"
    publish(engine, signer, write(engine, 20), heads)
    tamper(engine, "DELETE FROM audit_event WHERE seq IN (11, 12)")
    assert (problem(engine) or "").startswith("seq 11 to 12 of gateway gw1 deleted")
    rechain(engine, "gw1")                        # the gap closed, the chain recomputed
    tamper(engine, "DELETE FROM audit_head")
    assert "ends at seq 18, but heads.jsonl holds a head at seq 20" in \
        checked(engine, signer, heads)


def test_truncated_tail_is_caught_by_the_database_heads_then_by_outside_heads(
        engine: Engine, signer: HeadSigner, tmp_path: Path) -> None:
    heads = tmp_path / "heads.jsonl"
    publish(engine, signer, write(engine, 20), heads)
    assert checked(engine, signer, heads) == ""
    tamper(engine, "DELETE FROM audit_event WHERE seq > 15")
    assert "ends at seq 15, but the database holds a head at seq 20" in checked(engine, signer)
    # deleted heads: the database cannot tell
    tamper(engine, "DELETE FROM audit_head")
    assert checked(engine, signer) == ""
    assert "ends at seq 15, but heads.jsonl holds a head at seq 20" in \
        checked(engine, signer, heads)


def test_head_signed_by_another_key_is_refused(engine: Engine, signer: HeadSigner,
                                              tmp_path: Path) -> None:
    heads = tmp_path / "heads.jsonl"
    writer = write(engine, 5)
    other = HeadSigner(Ed25519PrivateKey.generate())
    record_signed_head(engine, other, "gw1", *writer.head)
    assert "is not signed by the audit key" in checked(engine, signer)
    tamper(engine, "DELETE FROM audit_head")
    HeadsFile(heads).append(make_head(None, "gw1", *writer.head))   # unsigned
    assert "in heads.jsonl is not signed" in checked(engine, signer, heads)


def forge_checkpoint(engine: Engine, seq: int, signature: str | None = None) -> None:
    """The original attack: a checkpoint at `seq`, and every row up to it gone."""
    with Session(engine) as session:
        row = session.exec(select(AuditEvent).where(AuditEvent.seq == seq)).one()
        session.add(AuditHead(gateway_id="gw1", kind="checkpoint", seq=seq,
                              hash=row.hash or "", signature=signature))
        session.commit()
    tamper(engine, "DELETE FROM audit_event WHERE seq <= :s", s=seq)


def test_forged_checkpoint_is_refused(engine: Engine, signer: HeadSigner) -> None:
    write(engine, 20)
    forge_checkpoint(engine, 12)
    assert verify(engine).ok                      # without the key a checkpoint is taken as is
    assert "checkpoint at seq 12 of gateway gw1 is not signed" in checked(engine, signer)


def test_a_signed_head_is_not_accepted_as_a_checkpoint(engine: Engine,
                                                       signer: HeadSigner) -> None:
    writer = write(engine, 20)
    with Session(engine) as session:
        hash_ = session.exec(select(AuditEvent.hash).where(AuditEvent.seq == 12)).one()
    forge_checkpoint(engine, 12, signer.sign(writer.gateway_id, 12, hash_ or ""))
    assert "checkpoint at seq 12 of gateway gw1 is not signed" in checked(engine, signer)


def test_rows_below_a_checkpoint_are_re_hashed_too(engine: Engine,
                                                   signer: HeadSigner) -> None:
    """A checkpoint no longer lets verification skip the rows before it."""
    write(engine, 20)
    with Session(engine) as session:
        row = session.exec(select(AuditEvent).where(AuditEvent.seq == 20)).one()
        session.add(AuditHead(gateway_id="gw1", kind="checkpoint", seq=20, hash=row.hash or "",
                              signature=signer.sign("gw1", 20, row.hash or "", CHECKPOINT)))
        session.commit()
    tamper(engine, "UPDATE audit_event SET host='innocent.test' WHERE seq=3")
    assert "seq 3) was changed" in checked(engine, signer)


def test_rows_moved_between_gateways(engine: Engine, signer: HeadSigner,
                                     tmp_path: Path) -> None:
    heads1, heads2 = tmp_path / "gw1.jsonl", tmp_path / "gw2.jsonl"
    publish(engine, signer, write(engine, 10), heads1)
    publish(engine, signer, write(engine, 6, gateway_id="gw2"), heads2)
    # gw2's rows passed off as gw1's
    tamper(engine, "UPDATE audit_event SET gateway_id='gw1', seq=seq+10 WHERE gateway_id='gw2'")
    assert "seq 11) does not follow" in (problem(engine) or "")
    rechain(engine, "gw1")
    tamper(engine, "DELETE FROM audit_head")
    assert verify(engine, signer.public_key).ok
    outside = {"gw1.jsonl": list(HeadsFile(heads1).heads()),
               "gw2.jsonl": list(HeadsFile(heads2).heads())}
    report = verify(engine, signer.public_key, outside)
    problems = {c.gateway_id: c.problem for c in report.chains}
    # gw1's own rows are intact up to its head; the rows after it are gw2's, gone from there
    assert problems["gw1"] is None
    assert "the database has none of its rows" in (problems["gw2"] or "")


def test_retention_keeps_the_rest_verifiable(engine: Engine, signer: HeadSigner,
                                             tmp_path: Path) -> None:
    heads = tmp_path / "heads.jsonl"
    writer = write(engine, 10)
    HeadsFile(heads).append(make_head(signer, "gw1", 4, _hash_of(engine, 4)))
    publish(engine, signer, writer, heads)
    old = (datetime.now(UTC) - timedelta(days=40)).strftime("%Y-%m-%d %H:%M:%S")
    tamper(engine, "UPDATE audit_event SET time = :t WHERE seq <= 6", t=old)  # six old rows
    assert apply_retention(engine, 30, signer) == 6
    report = verify(engine, signer.public_key, {"h": list(HeadsFile(heads).heads())})
    assert report.ok and report.chains[0].rows == 4, report
    write(engine, 3)
    assert verify(engine).chains[0].head_seq == 13
    # the oldest remaining row deleted as if retention had taken it: no checkpoint says so
    tamper(engine, "DELETE FROM audit_event WHERE seq = 7")
    assert "seq 1 to 7 of gateway gw1 deleted" in (problem(engine) or "")


def _hash_of(engine: Engine, seq: int) -> str:
    with Session(engine) as session:
        return session.exec(select(AuditEvent.hash).where(AuditEvent.seq == seq)).one() or ""


def test_a_writer_goes_on_after_its_published_head(engine: Engine, signer: HeadSigner,
                                                   tmp_path: Path) -> None:
    """The tail cut off while the gateway was down: the next rows do not write over it."""
    heads = tmp_path / "heads.jsonl"
    publish(engine, signer, write(engine, 10), heads)
    tamper(engine, "DELETE FROM audit_event WHERE seq > 6")
    last = HeadsFile(heads).last("gw1")
    assert last is not None
    writer = AuditWriter(engine, gateway_id="gw1")
    writer.start((last.seq, last.hash))
    writer.record(decision="allow", reason="r", protocol="dns")
    writer.flush()
    writer.close()
    assert writer.head[0] == 11
    assert (problem(engine) or "").startswith("seq 7 to 10 of gateway gw1 deleted")


def test_a_heads_file_that_does_not_parse_is_named(tmp_path: Path) -> None:
    path = tmp_path / "heads.jsonl"
    path.write_text('{"gateway_id": "gw1", "seq": 1, "hash": "ab"}\nnot json\n')
    with pytest.raises(ValueError, match="line 2 is not a chain head"):
        list(HeadsFile(path).heads())


def test_columns_added_later_are_hashed_only_when_set() -> None:
    """Rows written before `dropped`, `mcp_method` and `mcp_tool` existed keep their hash;
    a row that sets one is bound to it."""
    row = {name: None for name in CHAINED} | {"time": "2026-01-01T00:00:00", "decision": "allow",
                                              "reason": "allowed_by_rule", "protocol": "http"}
    before = {k: v for k, v in row.items() if k not in ("dropped", "mcp_method", "mcp_tool")}
    assert row_hash(row) == row_hash(before)
    with_tool = {**row, "mcp_method": "tools/call", "mcp_tool": "read_issue"}
    assert row_hash(with_tool) != row_hash(row)
    assert row_hash(with_tool) != row_hash({**with_tool, "mcp_tool": "delete_repo"})
