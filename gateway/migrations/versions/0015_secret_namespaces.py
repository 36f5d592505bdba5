"""The Kubernetes namespaces whose pods may bind a secret (sandgate.dev/secrets): none until
set, so no pod may bind a secret stored before this revision until someone says which.

Revision ID: 0015
Revises: 0013
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("secret") as batch:
        batch.add_column(sa.Column("kubernetes_namespaces", sa.String(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("secret") as batch:
        batch.drop_column("kubernetes_namespaces")
