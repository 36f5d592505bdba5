"""Opening the vault with its master key, and rotating that key without a window in which
the stored data keys and the key file disagree."""

from __future__ import annotations

import os
from pathlib import Path

from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from vault.crypto import KeySource, MasterKey, VaultError, load_master_key, write_key_file
from vault.models import SecretVersion
from vault.store import Vault


def _pending(path: Path) -> Path:
    return path.with_name(path.name + ".new")


def _key_ids_in_use(engine: Engine) -> set[str]:
    with Session(engine) as session:
        return set(session.exec(select(SecretVersion.master_key_id).distinct()).all())


def open_vault(engine: Engine, source: KeySource, *, create: bool = False) -> Vault:
    """The vault with its master key. Finishes a rotation a crash interrupted: if the data
    keys are already wrapped by the pending new key, that key becomes the key file."""
    if source.path is not None and _pending(source.path).exists():
        pending = load_master_key(KeySource(path=_pending(source.path)), create=False)
        if pending.id in _key_ids_in_use(engine):
            os.replace(_pending(source.path), source.path)
        else:
            _pending(source.path).unlink()
    master = load_master_key(source, create=create)
    in_use = _key_ids_in_use(engine)
    if in_use and master.id not in in_use:
        raise VaultError(f"the master key (id {master.id}) is not the one the stored secrets "
                         f"were sealed with (id {', '.join(sorted(in_use))}); "
                         "restore the right key file or SANDGATE_MASTER_KEY")
    return Vault(engine, master)


def rotate_master_key(vault: Vault, source: KeySource) -> tuple[str, int]:
    """Re-wrap every data key with a new master key written to the key file; return the new
    key's id and the number of data keys re-wrapped."""
    if source.path is None:
        raise VaultError("the master key comes from SANDGATE_MASTER_KEY, which sandgate cannot "
                         "rewrite; rotate by moving it to a key file (SANDGATE_MASTER_KEY_FILE)")
    new = MasterKey.generate()
    write_key_file(_pending(source.path), new)      # 1. the new key is safe on disk
    count = vault.rotate_master(new)                # 2. one transaction re-wraps everything
    os.replace(_pending(source.path), source.path)  # 3. the key file follows
    return new.id, count
