"""Persisted slot allocation: a live slot (and so its addresses) is never handed out twice,
also across processes and restarts. The primary key makes a double allocation impossible."""

from __future__ import annotations

from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, or_, select

from sandbox_net.addressing import MAX_SLOTS, SlotAddresses, addresses_for
from sandbox_net.errors import NetError
from sandbox_net.models import NetSlot


def allocate(engine: Engine, sandbox_id: str, gateway_id: str | None = None,
             host: str = "") -> SlotAddresses:
    """Take the lowest free slot of `host` for `sandbox_id`. Raises NetError when none is
    left."""
    for _attempt in range(20):
        with Session(engine) as session:
            used = set(session.exec(select(NetSlot.slot).where(NetSlot.host == host)).all())
            free = next((s for s in range(MAX_SLOTS) if s not in used), None)
            if free is None:
                raise NetError(f"all {MAX_SLOTS} sandbox address slots are in use")
            session.add(NetSlot(host=host, slot=free, sandbox_id=sandbox_id,
                                gateway_id=gateway_id))
            try:
                session.commit()
            except IntegrityError:
                continue  # another process took it first; look again
            return addresses_for(free)
    raise NetError("could not allocate an address slot (too much contention)")


def release(engine: Engine, sandbox_id: str) -> None:
    with Session(engine) as session:
        for row in session.exec(select(NetSlot).where(NetSlot.sandbox_id == sandbox_id)):
            session.delete(row)
        session.commit()


def addresses_of(engine: Engine, sandbox_id: str) -> SlotAddresses | None:
    with Session(engine) as session:
        row = session.exec(select(NetSlot).where(NetSlot.sandbox_id == sandbox_id)).first()
        return addresses_for(row.slot) if row else None


def allocated(engine: Engine, gateway_id: str | None = None) -> dict[str, SlotAddresses]:
    """Slots in use; with `gateway_id`, those of that gateway (and of none)."""
    query = select(NetSlot)
    if gateway_id is not None:
        query = query.where(or_(NetSlot.gateway_id == gateway_id,
                                NetSlot.gateway_id.is_(None)))  # type: ignore[union-attr]
    with Session(engine) as session:
        return {row.sandbox_id: addresses_for(row.slot) for row in session.exec(query)}
