"""The schema of the first release: sandboxes, address slots, secrets, audit events.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sandbox",
        sa.Column("id", sa.String(), primary_key=True),
        sa.Column("runtime", sa.String(), nullable=False),
        sa.Column("policy", sa.String(), nullable=False),
        sa.Column("policy_source", sa.String(), nullable=False),
        sa.Column("state", sa.String(), nullable=False, index=True),
        sa.Column("ip", sa.String(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("deleted_at", sa.DateTime(), nullable=True),
    )
    op.create_table(
        "net_slot",
        sa.Column("slot", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("sandbox_id", sa.String(), nullable=False, unique=True, index=True),
        sa.Column("allocated_at", sa.DateTime(), nullable=False),
    )
    op.create_table(
        "secret",
        sa.Column("name", sa.String(), primary_key=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.Column("last_used_at", sa.DateTime(), nullable=True),
    )
    op.create_table(
        "secret_version",
        sa.Column("name", sa.String(), primary_key=True),
        sa.Column("version", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("wrapped_key", sa.LargeBinary(), nullable=False),
        sa.Column("ciphertext", sa.LargeBinary(), nullable=False),
        sa.Column("master_key_id", sa.String(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
    )
    op.create_table(
        "audit_event",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("time", sa.DateTime(), nullable=False, index=True),
        sa.Column("sandbox_id", sa.String(), nullable=True, index=True),
        sa.Column("policy", sa.String(), nullable=True),
        sa.Column("policy_version", sa.String(), nullable=True),
        sa.Column("rule", sa.String(), nullable=True),
        sa.Column("decision", sa.String(), nullable=False, index=True),
        sa.Column("reason", sa.String(), nullable=False),
        sa.Column("protocol", sa.String(), nullable=False),
        sa.Column("method", sa.String(), nullable=True),
        sa.Column("scheme", sa.String(), nullable=True),
        sa.Column("host", sa.String(), nullable=True, index=True),
        sa.Column("port", sa.Integer(), nullable=True),
        sa.Column("path", sa.String(), nullable=True),
        sa.Column("status", sa.Integer(), nullable=True),
        sa.Column("bytes_up", sa.Integer(), nullable=False),
        sa.Column("bytes_down", sa.Integer(), nullable=False),
        sa.Column("duration_ms", sa.Float(), nullable=True),
        sa.Column("upstream", sa.String(), nullable=True),
        sa.Column("sni", sa.String(), nullable=True),
        sa.Column("secrets", sa.String(), nullable=True),
        sa.Column("error", sa.String(), nullable=True),
    )


def downgrade() -> None:
    for table in ("audit_event", "secret_version", "secret", "net_slot", "sandbox"):
        op.drop_table(table)
