"""The hash chain: changed, deleted and reordered rows are named; signed heads catch
truncation; retention keeps the rest verifiable."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.engine import Engine

from gateway.audit.chain import HeadSigner, apply_retention, record_signed_head, verify
from tests.gateway.audit.conftest import problem, write


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
