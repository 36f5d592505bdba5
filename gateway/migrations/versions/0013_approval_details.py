"""Approvals: what the person deciding is shown of a held request beyond its path (the
redacted query, the body's announced length), and who revoked a `--for sandbox` allow.

Revision ID: 0013
Revises: 0012
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

COLUMNS = (("query", sa.String()), ("body_bytes", sa.Integer()), ("revoked_by", sa.String()),
           ("revoked_at", sa.DateTime()))


def upgrade() -> None:
    with op.batch_alter_table("approval") as batch:
        for name, kind in COLUMNS:
            batch.add_column(sa.Column(name, kind, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("approval") as batch:
        for name, _kind in reversed(COLUMNS):
            batch.drop_column(name)
