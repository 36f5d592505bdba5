"""The encrypted store: values round-trip, tampering and wrong keys fail loudly, rotation
keeps every value, and nothing ever prints a value."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
from sqlalchemy import text

from gateway.db import make_engine
from vault.crypto import KeySource, MasterKey, VaultError, load_master_key, write_key_file
from vault.keyring import open_vault, rotate_master_key
from vault.models import SecretVersion
from vault.secret import SecretValue


@pytest.fixture
def engine(tmp_path: Path):  # type: ignore[no-untyped-def]
    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    yield engine
    engine.dispose()


def test_round_trip_and_versions(engine, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    vault = open_vault(engine, KeySource(path=tmp_path / "master.key"), create=True)
    assert vault.put("TOKEN", "first") == 1
    assert vault.put("TOKEN", "second") == 2
    assert vault.reveal("TOKEN").reveal() == "second"
    assert [(i.name, i.version) for i in vault.list()] == [("TOKEN", 2)]
    assert vault.delete("TOKEN") and not vault.exists("TOKEN")
    with pytest.raises(VaultError, match="no secret named 'TOKEN'"):
        vault.reveal("TOKEN")


def test_values_are_not_stored_in_clear(engine, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    vault = open_vault(engine, KeySource(path=tmp_path / "master.key"), create=True)
    vault.put("TOKEN", "needle-in-the-db-0123456789")
    engine.dispose()
    for path in tmp_path.iterdir():
        assert b"needle-in-the-db" not in path.read_bytes(), path


def test_tampered_ciphertext_fails(engine, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    vault = open_vault(engine, KeySource(path=tmp_path / "master.key"), create=True)
    vault.put("TOKEN", "value")
    with engine.begin() as conn:
        row = conn.execute(text("SELECT ciphertext FROM secret_version")).one()
        flipped = bytes([row[0][0]]) + bytes([row[0][1] ^ 1]) + row[0][2:]
        conn.execute(text("UPDATE secret_version SET ciphertext = :c"), {"c": flipped})
    fresh = open_vault(engine, KeySource(path=tmp_path / "master.key"))
    with pytest.raises(VaultError, match="tampered"):
        fresh.reveal("TOKEN")


def test_ciphertext_moved_to_another_secret_fails(engine, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    vault = open_vault(engine, KeySource(path=tmp_path / "master.key"), create=True)
    vault.put("A", "value-a")
    vault.put("B", "value-b")
    with engine.begin() as conn:
        a = conn.execute(text("SELECT wrapped_key, ciphertext FROM secret_version "
                              "WHERE name='A'")).one()
        conn.execute(text("UPDATE secret_version SET wrapped_key=:w, ciphertext=:c "
                          "WHERE name='B'"), {"w": a[0], "c": a[1]})
    with pytest.raises(VaultError):
        open_vault(engine, KeySource(path=tmp_path / "master.key")).reveal("B")


def test_wrong_master_key_is_refused(engine, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    vault = open_vault(engine, KeySource(path=tmp_path / "master.key"), create=True)
    vault.put("TOKEN", "value")
    with pytest.raises(VaultError, match="not the one the stored secrets were sealed with"):
        open_vault(engine, KeySource(text=MasterKey.generate().to_text()))


def test_key_file_must_be_private(tmp_path: Path) -> None:
    path = tmp_path / "master.key"
    write_key_file(path, MasterKey.generate())
    assert path.stat().st_mode & 0o777 == 0o600
    os.chmod(path, 0o644)
    with pytest.raises(VaultError, match="mode 0644; it must be 0600"):
        load_master_key(KeySource(path=path), create=False)


@pytest.mark.parametrize("text", ["short", "!" * 44, "00" * 31])
def test_bad_master_key_text(text: str) -> None:
    with pytest.raises(VaultError, match="32 bytes"):
        MasterKey.from_text(text)


def test_rotation_keeps_values_and_retires_the_old_key(engine, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    source = KeySource(path=tmp_path / "master.key")
    vault = open_vault(engine, source, create=True)
    old_text = (tmp_path / "master.key").read_text()
    for i in range(3):
        vault.put(f"S{i}", f"value-{i}")
    key_id, count = rotate_master_key(vault, source)
    assert count == 3 and vault.master_key_id == key_id
    reopened = open_vault(engine, source)
    assert [reopened.reveal(f"S{i}").reveal() for i in range(3)] == ["value-0", "value-1",
                                                                       "value-2"]
    with pytest.raises(VaultError):
        open_vault(engine, KeySource(text=old_text))


def test_interrupted_rotation_recovers(engine, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    # The crash window: data keys re-wrapped by the new key, key file not yet replaced.
    source = KeySource(path=tmp_path / "master.key")
    vault = open_vault(engine, source, create=True)
    vault.put("TOKEN", "survives")
    new = MasterKey.generate()
    write_key_file(tmp_path / "master.key.new", new)
    vault.rotate_master(new)
    reopened = open_vault(engine, source)
    assert reopened.reveal("TOKEN").reveal() == "survives"
    assert not (tmp_path / "master.key.new").exists()
    assert reopened.master_key_id == new.id


def test_secret_value_never_prints() -> None:
    value = SecretValue("hunter2-hunter2")
    for rendered in (repr(value), str(value), f"{value}", f"{value!r}", str([value]),
                     str({"v": value})):
        assert "hunter2" not in rendered
    with pytest.raises(TypeError):
        pickle.dumps(value)
    assert value.equals("hunter2-hunter2") and not value.equals("hunter3-hunter2")


def test_rows_carry_the_master_key_id(engine, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    vault = open_vault(engine, KeySource(path=tmp_path / "master.key"), create=True)
    vault.put("TOKEN", "v")
    from sqlmodel import Session, select
    with Session(engine) as session:
        assert session.exec(select(SecretVersion.master_key_id)).one() == vault.master_key_id


def test_kubernetes_namespaces_of_a_secret(engine, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """None until set (no pod may bind the secret); kept across new versions; gone with the
    secret, so one made again under the name starts with none."""
    vault = open_vault(engine, KeySource(path=tmp_path / "master.key"), create=True)
    assert not vault.set_namespaces("TOKEN", ["team-a"])   # no such secret
    vault.put("TOKEN", "first")
    assert vault.namespaces("TOKEN") == frozenset()
    assert vault.set_namespaces("TOKEN", ["team-b", "team-a", "team-a"])
    vault.put("TOKEN", "second")
    assert vault.namespaces("TOKEN") == {"team-a", "team-b"}
    assert [i.kubernetes_namespaces for i in vault.list()] == [("team-a", "team-b")]
    assert vault.set_namespaces("TOKEN", [])
    assert vault.namespaces("TOKEN") == frozenset()
    vault.set_namespaces("TOKEN", ["team-a"])
    vault.delete("TOKEN")
    vault.put("TOKEN", "again")
    assert vault.namespaces("TOKEN") == frozenset() and vault.namespaces("NONE") == frozenset()
