"""Kubernetes pods wired by sandgate-cni: the pod's namespace/name and UID on its sandbox row
and on every audit row it causes (hashed only when set, gateway.audit.models.LATER, so the
rows written before keep their hash), and the container id its runtime names it by.

Revision ID: 0012
Revises: 0011
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("audit_event") as batch:
        batch.add_column(sa.Column("pod", sa.String(), nullable=True))
        batch.add_column(sa.Column("pod_uid", sa.String(), nullable=True))
        batch.create_index("ix_audit_event_pod", ["pod"])
    with op.batch_alter_table("sandbox") as batch:
        batch.add_column(sa.Column("pod", sa.String(), nullable=True))
        batch.add_column(sa.Column("pod_uid", sa.String(), nullable=True))
        batch.add_column(sa.Column("container_id", sa.String(), nullable=True))
        batch.create_index("ix_sandbox_container_id", ["container_id"])


def downgrade() -> None:
    with op.batch_alter_table("sandbox") as batch:
        batch.drop_index("ix_sandbox_container_id")
        batch.drop_column("container_id")
        batch.drop_column("pod_uid")
        batch.drop_column("pod")
    with op.batch_alter_table("audit_event") as batch:
        batch.drop_index("ix_audit_event_pod")
        batch.drop_column("pod_uid")
        batch.drop_column("pod")
