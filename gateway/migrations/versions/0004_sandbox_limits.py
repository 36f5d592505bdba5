"""Sandbox lifecycle: time to live, idle timeout, resource limits, last activity.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

COLUMNS = (
    sa.Column("ttl_seconds", sa.Integer(), nullable=True),
    sa.Column("expires_at", sa.DateTime(), nullable=True),
    sa.Column("idle_timeout_seconds", sa.Integer(), nullable=True),
    sa.Column("last_active_at", sa.DateTime(), nullable=True),
    sa.Column("memory_mb", sa.Integer(), nullable=True),
    sa.Column("cpus", sa.Float(), nullable=True),
    sa.Column("max_pids", sa.Integer(), nullable=True),
    sa.Column("end_reason", sa.String(), nullable=True),
)


def upgrade() -> None:
    with op.batch_alter_table("sandbox") as batch:
        for column in COLUMNS:
            batch.add_column(column)


def downgrade() -> None:
    with op.batch_alter_table("sandbox") as batch:
        for column in reversed(COLUMNS):
            batch.drop_column(column.name)
