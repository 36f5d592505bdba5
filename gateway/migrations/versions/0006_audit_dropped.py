"""Audit rows that stand for others: `dropped`, the number of DNS queries a throttled sandbox
sent that got neither an answer nor a row of their own (reason dropped_by_throttle).

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("audit_event") as batch:
        batch.add_column(sa.Column("dropped", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("audit_event") as batch:
        batch.drop_column("dropped")
