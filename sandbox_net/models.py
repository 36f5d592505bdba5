"""sandbox_net's table: address slots, persisted so a live slot is never handed out twice,
also across processes and restarts."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlmodel import Field, SQLModel


class NetSlot(SQLModel, table=True):
    __tablename__ = "net_slot"

    # A slot's addresses are links on one host: unique per host, so gateways on one host
    # (sharing a database) never share an address, and hosts do not share one slot space.
    host: str = Field(default="", primary_key=True)
    slot: int = Field(primary_key=True)
    sandbox_id: str = Field(unique=True, index=True)
    gateway_id: str | None = Field(default=None, index=True)   # the gateway that took it
    allocated_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
