"""A sandbox's quarantine on its own record (when and why), written at the trip, so a
restarted gateway keeps it even when the audit row of the attempt was not written yet.

Revision ID: 0016
Revises: 0015
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("sandbox") as batch:
        batch.add_column(sa.Column("quarantined_at", sa.DateTime(), nullable=True))
        batch.add_column(sa.Column("quarantine_reason", sa.String(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("sandbox") as batch:
        batch.drop_column("quarantine_reason")
        batch.drop_column("quarantined_at")
