"""Tamper evidence for the audit log: verifying each gateway's hash chain (every row re-hashed
from its fields), against the heads signed into the database and against heads kept
elsewhere, and retention that deletes old rows without breaking verification.

What each check can and cannot reveal is in docs/AUDIT.md ("What a database administrator
can hide").
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import timedelta

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import delete
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, func, select

from gateway.audit.heads import CHECKPOINT, HEAD, Head, HeadSigner, signed_by
from gateway.audit.models import GENESIS, AuditEvent, AuditHead, row_hash
from gateway.clock import utcnow

PAGE = 5000


@dataclass
class ChainReport:
    gateway_id: str
    rows: int = 0
    start_seq: int = 0            # the chain is checked from the row after this one
    start_hash: str = GENESIS
    head_seq: int = 0
    head_hash: str = GENESIS
    problem: str | None = None
    signed_heads: int = 0         # heads in the database
    outside_heads: int = 0        # heads from --heads files


@dataclass
class VerifyReport:
    chains: list[ChainReport] = field(default_factory=list)
    unchained: int = 0

    @property
    def ok(self) -> bool:
        return all(c.problem is None for c in self.chains)


def _first_seq(session: Session, gateway_id: str) -> int | None:
    value = session.exec(select(func.min(AuditEvent.seq))
                         .where(AuditEvent.gateway_id == gateway_id)).one()
    return int(value) if value is not None else None


def _start(session: Session, report: ChainReport,
           key: Ed25519PublicKey | None) -> tuple[int, str] | None:
    """Where the chain begins: genesis, or the checkpoint retention left right before the
    first row still present. With a key, that checkpoint must carry the key's signature."""
    gateway_id = report.gateway_id
    first = _first_seq(session, gateway_id)
    if first == 1:
        return 0, GENESIS
    query = select(AuditHead).where(AuditHead.gateway_id == gateway_id,
                                    AuditHead.kind == "checkpoint")
    query = (query.where(AuditHead.seq == first - 1) if first is not None
             else query.order_by(col(AuditHead.seq).desc()).limit(1))
    checkpoints = session.exec(query).all()
    if not checkpoints:
        if first is None:
            return 0, GENESIS
        report.problem = (f"seq 1 to {first - 1} of gateway {gateway_id} deleted (no "
                          "retention checkpoint accounts for them)")
        return None
    for checkpoint in checkpoints:
        if key is None or signed_by(key, checkpoint.signature, CHECKPOINT, gateway_id,
                                    checkpoint.seq, checkpoint.hash):
            return checkpoint.seq, checkpoint.hash
    report.problem = (f"the checkpoint at seq {checkpoints[0].seq} of gateway {gateway_id} is "
                      "not signed by the audit key: forged, or rows before it were deleted")
    return None


def _walk(session: Session, report: ChainReport, seq: int, prev: str) -> None:
    """Every row from `seq` + 1 on: contiguous, linked, and hashing to its stored hash."""
    gateway_id = report.gateway_id
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
                return
            seq, prev = row.seq, row.hash or ""
            report.rows += 1
        if len(rows) < PAGE:
            break
    report.head_seq, report.head_hash = seq, prev


def _verify_chain(engine: Engine, gateway_id: str,
                  key: Ed25519PublicKey | None) -> ChainReport:
    report = ChainReport(gateway_id)
    with Session(engine) as session:
        start = _start(session, report, key)
        if start is None:
            return report
        report.start_seq, report.start_hash = start
        _walk(session, report, *start)
    return report


def _hash_at(engine: Engine, report: ChainReport, seq: int) -> str | None:
    """The (verified) hash of row `seq`, once its chain has been walked."""
    if seq == report.head_seq:
        return report.head_hash
    with Session(engine) as session:
        row = session.exec(select(AuditEvent.hash).where(
            AuditEvent.gateway_id == report.gateway_id, AuditEvent.seq == seq)).first()
    return row


def check_head(engine: Engine, report: ChainReport, head: Head,
               key: Ed25519PublicKey | None, source: str) -> str | None:
    """The problem a head reveals, if any. The latest head of a gateway vouches for every row
    up to it: each row's hash covers the one before it."""
    gateway = report.gateway_id
    if key is not None and not signed_by(key, head.signature, HEAD, gateway, head.seq,
                                         head.hash):
        return f"the head at seq {head.seq} of gateway {gateway} in {source} is not signed " \
               "by the audit key"
    if head.seq > report.head_seq:
        if report.rows == 0 and report.start_seq == 0:
            return (f"{source} holds a head at seq {head.seq} of gateway {gateway}, but the "
                    "database has none of its rows: they were deleted or moved")
        return (f"the log of gateway {gateway} ends at seq {report.head_seq}, but {source} "
                f"holds a head at seq {head.seq}: rows were deleted from its end")
    if head.seq < report.start_seq:
        return None    # retired by retention; the signed checkpoint vouches for what follows
    stored = report.start_hash if head.seq == report.start_seq \
        else _hash_at(engine, report, head.seq)
    if stored != head.hash:
        return (f"row seq {head.seq} of gateway {gateway} differs from the head in {source}: "
                "the chain up to it was rewritten")
    return None


def _latest_signed(engine: Engine, gateway_id: str) -> tuple[Head | None, int]:
    with Session(engine) as session:
        count = int(session.exec(select(func.count()).select_from(AuditHead).where(
            AuditHead.gateway_id == gateway_id, AuditHead.kind == "signed")).one())
        row = session.exec(select(AuditHead).where(
            AuditHead.gateway_id == gateway_id, AuditHead.kind == "signed")
            .order_by(col(AuditHead.seq).desc(), col(AuditHead.id).desc()).limit(1)).first()
    head = Head(gateway_id, row.seq, row.hash, row.signature) if row is not None else None
    return head, count


def _gateways(engine: Engine, outside: Iterable[Head]) -> tuple[list[str], int]:
    with Session(engine) as session:
        found = {g for g in session.exec(select(AuditEvent.gateway_id).distinct()).all()
                 if g is not None}
        found |= set(session.exec(select(AuditHead.gateway_id).distinct()).all())
        unchained = int(session.exec(select(func.count()).select_from(AuditEvent)
                                     .where(col(AuditEvent.gateway_id).is_(None))).one())
    found |= {h.gateway_id for h in outside}
    return sorted(found), unchained


def verify(engine: Engine, public_key: Ed25519PublicKey | None = None,
           heads: dict[str, list[Head]] | None = None) -> VerifyReport:
    """Check every gateway's chain; each report names the first changed, deleted or
    reordered row. `heads`: source name -> heads kept outside the database."""
    outside = [(source, h) for source, hs in (heads or {}).items() for h in hs]
    gateways, unchained = _gateways(engine, (h for _s, h in outside))
    result = VerifyReport(unchained=unchained)
    for gateway_id in gateways:
        report = _verify_chain(engine, gateway_id, public_key)
        result.chains.append(report)
        if report.problem is not None:
            continue
        latest, report.signed_heads = _latest_signed(engine, gateway_id)
        if latest is not None:
            report.problem = check_head(engine, report, latest, public_key, "the database")
        for source in sorted({s for s, h in outside if h.gateway_id == gateway_id}):
            mine = [h for s, h in outside if s == source and h.gateway_id == gateway_id]
            report.outside_heads += len(mine)
            last = max(mine, key=lambda h: h.seq)
            report.problem = report.problem or check_head(engine, report, last, public_key,
                                                          source)
    return result


def apply_retention(engine: Engine, days: int, signer: HeadSigner | None = None) -> int:
    """Delete rows older than `days`. For each chain, a checkpoint (signed with the audit key
    when there is one) records where the kept part resumes, so `verify` still checks
    everything that remains. Returns rows deleted."""
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
            signature = signer.sign(gateway_id, last.seq, last.hash, CHECKPOINT) \
                if signer is not None else None
            session.add(AuditHead(gateway_id=gateway_id, kind="checkpoint", seq=last.seq,
                                  hash=last.hash, signature=signature))
            result = session.execute(delete(AuditEvent).where(
                col(AuditEvent.gateway_id) == gateway_id, col(AuditEvent.seq) <= last.seq))
            deleted += result.rowcount or 0  # type: ignore[attr-defined]
        result = session.execute(delete(AuditEvent).where(
            col(AuditEvent.gateway_id).is_(None), col(AuditEvent.time) < cutoff))
        deleted += result.rowcount or 0  # type: ignore[attr-defined]
        session.commit()
    return deleted
