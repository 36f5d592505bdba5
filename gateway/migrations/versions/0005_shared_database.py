"""Several gateways on one database: policies shared by revision; sandboxes and address slots
owned by the gateway that made them.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "policy_document",
        sa.Column("name", sa.String(), primary_key=True),
        sa.Column("yaml", sa.Text(), nullable=True),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("gateway_id", sa.String(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
    )
    op.create_index("ix_policy_document_revision", "policy_document", ["revision"],
                    unique=True)
    # Rows from before: owned by nobody in particular, so by whichever gateway meets them.
    for table in ("sandbox", "net_slot"):
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("gateway_id", sa.String(), nullable=True))
            batch.create_index(f"ix_{table}_gateway_id", ["gateway_id"])


def downgrade() -> None:
    for table in ("net_slot", "sandbox"):
        with op.batch_alter_table(table) as batch:
            batch.drop_index(f"ix_{table}_gateway_id")
            batch.drop_column("gateway_id")
    op.drop_index("ix_policy_document_revision", "policy_document")
    op.drop_table("policy_document")
