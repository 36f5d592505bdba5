"""Several gateways on one database: policies shared by revision; sandboxes and address slots
owned by the gateway that made them; slots unique per host.

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
    with op.batch_alter_table("sandbox") as batch:
        batch.add_column(sa.Column("gateway_id", sa.String(), nullable=True))
        batch.create_index("ix_sandbox_gateway_id", ["gateway_id"])
    # A slot is unique per host (its addresses are links on that host), not per database:
    # the table is rebuilt with the primary key (host, slot).
    op.create_table(
        "net_slot_new",
        sa.Column("host", sa.String(), primary_key=True, server_default=""),
        sa.Column("slot", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("sandbox_id", sa.String(), nullable=False),
        sa.Column("gateway_id", sa.String(), nullable=True),
        sa.Column("allocated_at", sa.DateTime(), nullable=False),
    )
    op.execute("INSERT INTO net_slot_new (host, slot, sandbox_id, allocated_at) "
               "SELECT '', slot, sandbox_id, allocated_at FROM net_slot")
    op.drop_table("net_slot")
    op.rename_table("net_slot_new", "net_slot")
    op.create_index("ix_net_slot_sandbox_id", "net_slot", ["sandbox_id"], unique=True)
    op.create_index("ix_net_slot_gateway_id", "net_slot", ["gateway_id"])


def downgrade() -> None:
    op.create_table(
        "net_slot_old",
        sa.Column("slot", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("sandbox_id", sa.String(), nullable=False, unique=True, index=True),
        sa.Column("allocated_at", sa.DateTime(), nullable=False),
    )
    op.execute("INSERT INTO net_slot_old (slot, sandbox_id, allocated_at) "
               "SELECT slot, sandbox_id, allocated_at FROM net_slot WHERE host = ''")
    op.drop_table("net_slot")
    op.rename_table("net_slot_old", "net_slot")
    with op.batch_alter_table("sandbox") as batch:
        batch.drop_index("ix_sandbox_gateway_id")
        batch.drop_column("gateway_id")
    op.drop_index("ix_policy_document_revision", "policy_document")
    op.drop_table("policy_document")
