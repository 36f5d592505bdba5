"""Secrets a provider mints (OAuth2, GitHub App, Google service account) or presents (mTLS
client certificate): the provider's kind, and its state as the gateway last saw it (last
refresh, expiry of what it holds, last error). The configuration itself stays in the sealed
value, like any secret.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("secret") as batch:
        batch.add_column(sa.Column("provider", sa.String(), nullable=True))
        batch.add_column(sa.Column("refreshed_at", sa.DateTime(), nullable=True))
        batch.add_column(sa.Column("expires_at", sa.DateTime(), nullable=True))
        batch.add_column(sa.Column("error", sa.String(), nullable=True))
        batch.add_column(sa.Column("error_at", sa.DateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("secret") as batch:
        for column in ("error_at", "error", "expires_at", "refreshed_at", "provider"):
            batch.drop_column(column)
