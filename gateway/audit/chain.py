"""Tamper evidence for the audit log: verifying each gateway's hash chain, signing chain
heads (so a third party holding the public key can check the log was not truncated or
rewritten), and retention that deletes old rows without breaking verification."""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy import delete
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, func, select

from gateway.audit.models import GENESIS, AuditEvent, AuditHead, row_hash
from gateway.clock import utcnow

PAGE = 5000


def head_message(gateway_id: str, seq: int, hash_: str) -> bytes:
    return f"sandgate-audit-head:{gateway_id}:{seq}:{hash_}".encode()


class HeadSigner:
    def __init__(self, key: Ed25519PrivateKey) -> None:
        self._key = key

    @classmethod
    def from_file(cls, path: Path) -> HeadSigner:
        if os.stat(path).st_mode & 0o077:
            raise ValueError(f"audit signing key {path} must be mode 0600 (chmod 600 {path})")
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError(f"{path} is not an Ed25519 private key")
        return cls(key)

    def sign(self, gateway_id: str, seq: int, hash_: str) -> str:
        return base64.b64encode(self._key.sign(head_message(gateway_id, seq, hash_))).decode()

    def public_pem(self) -> bytes:
        return self._key.public_key().public_bytes(serialization.Encoding.PEM,
                                                   serialization.PublicFormat.SubjectPublicKeyInfo)


def write_keypair(path: Path) -> Path:
    """A new Ed25519 signing key at `path` (0600) and its public key at `path`.pub."""
    key = Ed25519PrivateKey.generate()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    public = path.with_name(path.name + ".pub")
    public.write_bytes(HeadSigner(key).public_pem())
    return public


def record_signed_head(engine: Engine, signer: HeadSigner, gateway_id: str, seq: int,
                       hash_: str) -> None:
    if seq == 0:
        return
    with Session(engine) as session:
        session.add(AuditHead(gateway_id=gateway_id, kind="signed", seq=seq, hash=hash_,
                              signature=signer.sign(gateway_id, seq, hash_)))
        session.commit()


@dataclass
class ChainReport:
    gateway_id: str
    rows: int = 0
    head_seq: int = 0
    head_hash: str = GENESIS
    problem: str | None = None
    signed_heads: int = 0


@dataclass
class VerifyReport:
    chains: list[ChainReport] = field(default_factory=list)
    unchained: int = 0

    @property
    def ok(self) -> bool:
        return all(c.problem is None for c in self.chains)


def _start(session: Session, gateway_id: str) -> tuple[int, str]:
    checkpoint = session.exec(
        select(AuditHead).where(AuditHead.gateway_id == gateway_id,
                                AuditHead.kind == "checkpoint")
        .order_by(col(AuditHead.seq).desc()).limit(1)).first()
    return (checkpoint.seq, checkpoint.hash) if checkpoint else (0, GENESIS)


def _verify_chain(engine: Engine, gateway_id: str) -> ChainReport:
    report = ChainReport(gateway_id)
    with Session(engine) as session:
        seq, prev = _start(session, gateway_id)
        while True:
            rows = session.exec(
                select(AuditEvent).where(AuditEvent.gateway_id == gateway_id,
                                         col(AuditEvent.seq) > seq)
                .order_by(col(AuditEvent.seq)).limit(PAGE)).all()
            for row in rows:
                assert row.seq is not None
                where = f"row id {row.id} (gateway {gateway_id} seq {row.seq})"
                if row.seq != seq + 1:
                    missing = (f"seq {seq + 1}" if row.seq == seq + 2
                               else f"seq {seq + 1} to {row.seq - 1}")
                    report.problem = f"{missing} of gateway {gateway_id} deleted (before {where})"
                elif row.prev_hash != prev:
                    report.problem = (f"{where} does not follow the row before it: rows were "
                                      "reordered, or the one before was replaced")
                elif row_hash(row.model_dump()) != row.hash:
                    report.problem = f"{where} was changed after it was written"
                if report.problem:
                    return report
                seq, prev = row.seq, row.hash or ""
                report.rows += 1
            if len(rows) < PAGE:
                break
    report.head_seq, report.head_hash = seq, prev
    return report


def _check_signed_heads(engine: Engine, report: ChainReport,
                        public_key: Ed25519PublicKey | None) -> None:
    with Session(engine) as session:
        heads = session.exec(select(AuditHead).where(AuditHead.gateway_id == report.gateway_id,
                                                     AuditHead.kind == "signed")
                             .order_by(col(AuditHead.seq))).all()
        for head in heads:
            if public_key is not None:
                try:
                    public_key.verify(base64.b64decode(head.signature or ""),
                                      head_message(head.gateway_id, head.seq, head.hash))
                except (InvalidSignature, ValueError):
                    report.problem = (f"signed head seq {head.seq} of gateway "
                                      f"{report.gateway_id} has a bad signature")
                    return
            if head.seq > report.head_seq:
                report.problem = (f"the log of gateway {report.gateway_id} ends at seq "
                                  f"{report.head_seq}, but seq {head.seq} was signed: rows "
                                  "were deleted from its end")
                return
            row = session.exec(select(AuditEvent).where(
                AuditEvent.gateway_id == report.gateway_id, AuditEvent.seq == head.seq)).first()
            if row is not None and row.hash != head.hash:
                report.problem = (f"row id {row.id} (gateway {report.gateway_id} seq {head.seq})"
                                  " differs from its signed head")
                return
            report.signed_heads += 1


def verify(engine: Engine, public_key: Ed25519PublicKey | None = None) -> VerifyReport:
    """Check every gateway's chain; each report names the first changed, deleted or
    reordered row."""
    result = VerifyReport()
    with Session(engine) as session:
        gateways = [g for g in session.exec(select(AuditEvent.gateway_id).distinct()).all()
                    if g is not None]
        gateways += [g for g in session.exec(select(AuditHead.gateway_id).distinct()).all()
                     if g not in gateways]
        result.unchained = int(session.exec(select(func.count()).select_from(AuditEvent)
                                            .where(col(AuditEvent.gateway_id).is_(None))).one())
    for gateway_id in sorted(gateways):
        report = _verify_chain(engine, gateway_id)
        if report.problem is None:
            _check_signed_heads(engine, report, public_key)
        result.chains.append(report)
    return result


def load_public_key(path: Path) -> Ed25519PublicKey:
    key = serialization.load_pem_public_key(path.read_bytes())
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError(f"{path} is not an Ed25519 public key")
    return key


def apply_retention(engine: Engine, days: int) -> int:
    """Delete rows older than `days`. For each chain, a checkpoint records where the kept part
    resumes, so `verify` still checks everything that remains. Returns rows deleted."""
    cutoff = utcnow() - timedelta(days=days)
    deleted = 0
    with Session(engine) as session:
        gateways = session.exec(select(AuditEvent.gateway_id).distinct()
                                .where(AuditEvent.time < cutoff)).all()
        for gateway_id in gateways:
            if gateway_id is None:
                continue
            last = session.exec(
                select(AuditEvent).where(AuditEvent.gateway_id == gateway_id,
                                         AuditEvent.time < cutoff)
                .order_by(col(AuditEvent.seq).desc()).limit(1)).first()
            if last is None or last.seq is None or last.hash is None:
                continue
            session.add(AuditHead(gateway_id=gateway_id, kind="checkpoint", seq=last.seq,
                                  hash=last.hash))
            result = session.execute(delete(AuditEvent).where(
                col(AuditEvent.gateway_id) == gateway_id, col(AuditEvent.seq) <= last.seq))
            deleted += result.rowcount or 0  # type: ignore[attr-defined]
        result = session.execute(delete(AuditEvent).where(
            col(AuditEvent.gateway_id).is_(None), col(AuditEvent.time) < cutoff))
        deleted += result.rowcount or 0  # type: ignore[attr-defined]
        session.commit()
    return deleted
