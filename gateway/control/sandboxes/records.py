"""The persisted record of each sandbox, so a restarted gateway knows what it was running.
A gateway reads and writes only its own records (several gateways may share a database)."""

from __future__ import annotations

from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, or_, select, update

from gateway.audit.models import AuditEvent
from gateway.clock import utcnow
from gateway.control.models import SandboxRecord
from gateway.control.sandboxes.schemas import SandboxPublic
from policies.decision import Reason


class Records:
    def __init__(self, engine: Engine, gateway_id: str) -> None:
        self.engine = engine
        self.gateway_id = gateway_id

    def get(self, sandbox_id: str) -> SandboxRecord | None:
        """This gateway's record of the sandbox, deleted or not."""
        with Session(self.engine) as session:
            record = session.get(SandboxRecord, sandbox_id)
        if record is None or record.gateway_id not in (None, self.gateway_id):
            return None
        return record

    def by_container(self, container_id: str) -> SandboxRecord | None:
        """This gateway's live record of the pod whose runtime calls it `container_id`."""
        with Session(self.engine) as session:
            return session.exec(select(SandboxRecord).where(
                SandboxRecord.container_id == container_id,
                SandboxRecord.state != "deleted", self._mine())).first()

    def live(self) -> list[SandboxRecord]:
        with Session(self.engine) as session:
            return list(session.exec(select(SandboxRecord).where(
                SandboxRecord.state != "deleted", self._mine())))

    def exfiltrated(self, sandbox_id: str) -> bool:
        """The audit log holds a secret-exfiltration attempt of the sandbox, which
        quarantined it: a restart must not lift the quarantine (a record from before
        `quarantined_at` was kept says so only there)."""
        with Session(self.engine) as session:
            return session.exec(select(AuditEvent.id).where(
                AuditEvent.sandbox_id == sandbox_id,
                AuditEvent.reason == Reason.SECRET_EXFIL_ATTEMPT).limit(1)).first() is not None

    def save(self, record: SandboxRecord) -> None:
        with Session(self.engine) as session:
            session.merge(record)
            session.commit()

    def mark_running(self, sandbox_id: str, ip: str | None) -> bool:
        """A record still being created becomes running; False when it was closed meanwhile
        (a closed record is never opened again)."""
        statement = update(SandboxRecord).where(
            col(SandboxRecord.id) == sandbox_id,
            col(SandboxRecord.state) == "creating").values(state="running", ip=ip)
        with Session(self.engine) as session:
            changed = session.execute(statement).rowcount   # type: ignore[attr-defined]
            session.commit()
        return bool(changed)

    def update(self, sandbox_id: str, **values: Any) -> None:
        """Set these columns of this gateway's record and no others: a whole record saved
        from an older copy would undo what was set meanwhile (a quarantine)."""
        with Session(self.engine) as session:
            session.exec(update(SandboxRecord).where(
                col(SandboxRecord.id) == sandbox_id, self._mine()).values(**values))
            session.commit()

    def quarantine(self, sandbox_id: str, reason: str) -> None:
        """Keep the sandbox's quarantine on its record (the first trip's time and reason)."""
        with Session(self.engine) as session:
            session.exec(update(SandboxRecord).where(
                col(SandboxRecord.id) == sandbox_id,
                col(SandboxRecord.quarantined_at).is_(None), self._mine(),
            ).values(quarantined_at=utcnow(), quarantine_reason=reason))
            session.commit()

    def close(self, sandbox_id: str, reason: str) -> None:
        """Mark the sandbox's record deleted, with why (once: a later reason does not
        overwrite the first)."""
        record = self.get(sandbox_id)
        if record is not None and record.state != "deleted":
            record.state = "deleted"
            record.deleted_at = utcnow()
            record.end_reason = reason
            self.save(record)

    def _mine(self) -> Any:
        return or_(SandboxRecord.gateway_id == self.gateway_id,
                   SandboxRecord.gateway_id.is_(None))  # type: ignore[union-attr]


def public(record: SandboxRecord, netns: str | None) -> SandboxPublic:
    return SandboxPublic(
        id=record.id, runtime=record.runtime, image=record.image, user=record.run_as,
        policy=record.policy, state=record.state,
        owner=record.owner, expires_at=record.expires_at, memory_mb=record.memory_mb,
        cpus=record.cpus, max_pids=record.max_pids, disk_mb=record.disk_mb,
        end_reason=record.end_reason,
        deleted_at=record.deleted_at, ip=record.ip, created_at=record.created_at,
        quarantined_at=record.quarantined_at, quarantine_reason=record.quarantine_reason,
        netns=netns if record.state != "deleted" else None)
