"""Migrations keep the rows they reshape, on SQLite and on PostgreSQL, and go back down."""

from __future__ import annotations

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, text

from gateway.audit import query as audit_query
from gateway.audit.chain import verify
from gateway.control.sandboxes.records import Records
from gateway.db import MIGRATIONS, make_engine, upgrade
from sandbox_net import slots
from tests.gateway.audit.conftest import write


def downgrade(engine: Engine, revision: str) -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, revision)


def insert_old_row(engine: Engine) -> None:
    """An audit row as a gateway before the hash chain wrote it."""
    with engine.begin() as conn:
        conn.execute(text(
            "INSERT INTO audit_event (time, decision, reason, protocol, host, bytes_up, "
            "bytes_down) VALUES ('2026-01-01 00:00:00', 'deny', 'no_matching_rule', 'dns', "
            "'old.test', 0, 0)"))


def test_address_slots_become_per_host_and_keep_their_rows(database_url: str) -> None:
    engine = make_engine(database_url, migrate=False)
    upgrade(engine, "0004")
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO net_slot (slot, sandbox_id, allocated_at) "
                          "VALUES (0, 'old00000', '2026-01-01 00:00:00')"))
    upgrade(engine)
    assert set(slots.allocated(engine)) == {"old00000"}
    # the old row is on host '': another host's slot space is its own
    assert slots.allocate(engine, "aaaa0000", "gw1", host="").slot == 1
    assert slots.allocate(engine, "bbbb0000", "gw2", host="other-host").slot == 0
    assert set(slots.allocated(engine, "gw1")) == {"old00000", "aaaa0000"}
    downgrade(engine, "0004")
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT sandbox_id FROM net_slot ORDER BY slot")).all()
    assert [r[0] for r in rows] == ["old00000", "aaaa0000"]   # host '' rows survive
    engine.dispose()


def test_migration_keeps_old_rows(database_url: str) -> None:
    engine = make_engine(database_url, migrate=False)
    upgrade(engine, "0001")
    insert_old_row(engine)
    upgrade(engine)
    rows = audit_query.latest(engine, audit_query.AuditFilter())
    assert [(r.host, r.decision, r.gateway_id, r.hash) for r in rows] == [
        ("old.test", "deny", None, None)]
    write(engine, 3)
    report = verify(engine)
    assert report.ok and report.unchained == 1
    engine.dispose()


def test_sandbox_owners_become_token_ids(database_url: str) -> None:
    engine = make_engine(database_url, migrate=False)
    upgrade(engine, "0006")
    with engine.begin() as conn:
        for token_id, name in (("aaaaaaaaaa", "ci"), ("bbbbbbbbbb", "operator"),
                               ("cccccccccc", "operator")):
            conn.execute(text("INSERT INTO api_token (id, name, role, secret_hash, created_at, "
                              "revoked) VALUES (:id, :name, 'operator', 'x', "
                              "'2026-01-01 00:00:00', false)"), {"id": token_id, "name": name})
        for sandbox_id, owner in (("s1", "ci"), ("s2", "operator"), ("s3", "local"),
                                  ("s4", "gone")):
            conn.execute(text("INSERT INTO sandbox (id, runtime, policy, policy_source, state, "
                              "owner, created_at) VALUES (:id, 'gvisor', 'p', 'p', 'running', "
                              ":owner, '2026-01-01 00:00:00')"), {"id": sandbox_id, "owner": owner})
    upgrade(engine)

    def owners() -> dict[str, str]:
        with engine.begin() as conn:
            return dict(conn.execute(text("SELECT id, owner FROM sandbox")).fetchall())

    # one token by that name: it; a name shared by two tokens: nobody's (admins only)
    assert owners() == {"s1": "token:aaaaaaaaaa", "s2": "legacy:operator", "s3": "local",
                        "s4": "legacy:gone"}
    downgrade(engine, "0006")
    assert owners() == {"s1": "ci", "s2": "operator", "s3": "local", "s4": "gone"}
    engine.dispose()


def test_approvals_keep_the_chain_of_older_rows_and_go_back_down(database_url: str) -> None:
    engine = make_engine(database_url, migrate=False)
    upgrade(engine, "0010")
    insert_old_row(engine)
    upgrade(engine)
    write(engine, 2)                                   # chained, no actor: not hashed
    write(engine, 1, actor="alice (token:abc)")        # hashed with it
    report = verify(engine)
    assert report.ok and report.unchained == 1
    with engine.connect() as conn:
        actors = conn.execute(text("SELECT actor FROM audit_event ORDER BY id")).all()
        assert [a[0] for a in actors] == [None, None, None, "alice (token:abc)"]
        assert conn.execute(text("SELECT count(*) FROM approval")).scalar() == 0
    downgrade(engine, "0010")
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM audit_event")).scalar() == 4
    engine.dispose()


def test_a_sandbox_record_keeps_its_quarantine_and_goes_back_down(database_url: str) -> None:
    engine = make_engine(database_url, migrate=False)
    upgrade(engine, "0012")
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO sandbox (id, runtime, policy, policy_source, state, "
                          "created_at) VALUES ('s1', 'gvisor', 'p', 'p', 'running', "
                          "'2026-01-01 00:00:00')"))
    upgrade(engine)
    records = Records(engine, "gw1")
    records.quarantine("s1", "secret_exfil_attempt")
    first = records.get("s1")
    assert first is not None and first.quarantine_reason == "secret_exfil_attempt"
    records.quarantine("s1", "later")                # the first trip's time and reason stay
    assert records.get("s1") == first
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, "0012")
    with engine.connect() as conn:
        assert conn.execute(text("SELECT id, state FROM sandbox")).all() == [("s1", "running")]
    engine.dispose()
