"""Audit log v2: owner, redacted query, header names, and the per-gateway hash chain;
signed chain heads and retention checkpoints.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

NEW_COLUMNS = (
    sa.Column("owner", sa.String(), nullable=True),
    sa.Column("query", sa.String(), nullable=True),
    sa.Column("request_headers", sa.String(), nullable=True),
    sa.Column("response_headers", sa.String(), nullable=True),
    sa.Column("gateway_id", sa.String(), nullable=True),
    sa.Column("seq", sa.BigInteger(), nullable=True),
    sa.Column("prev_hash", sa.String(), nullable=True),
    sa.Column("hash", sa.String(), nullable=True),
)


def upgrade() -> None:
    with op.batch_alter_table("audit_event") as batch:
        for column in NEW_COLUMNS:
            batch.add_column(column)
        batch.create_index("ix_audit_event_chain", ["gateway_id", "seq"], unique=True)
        batch.create_index("ix_audit_event_reason", ["reason"])
        batch.create_index("ix_audit_event_rule", ["rule"])
        batch.create_index("ix_audit_event_status", ["status"])
    with op.batch_alter_table("sandbox") as batch:
        batch.add_column(sa.Column("owner", sa.String(), nullable=True))
    op.create_table(
        "audit_head",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("gateway_id", sa.String(), nullable=False, index=True),
        sa.Column("kind", sa.String(), nullable=False),   # signed | checkpoint
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("hash", sa.String(), nullable=False),
        sa.Column("signature", sa.String(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("audit_head")
    with op.batch_alter_table("sandbox") as batch:
        batch.drop_column("owner")
    with op.batch_alter_table("audit_event") as batch:
        for name in ("ix_audit_event_status", "ix_audit_event_rule", "ix_audit_event_reason",
                     "ix_audit_event_chain"):
            batch.drop_index(name)
        for column in reversed(NEW_COLUMNS):
            batch.drop_column(column.name)
