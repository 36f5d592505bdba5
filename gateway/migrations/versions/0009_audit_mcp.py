"""Audit rows of MCP traffic (a rule with `mcp:`): `mcp_method`, the JSON-RPC method of the
message the row is about, and `mcp_tool`, the tool of a tools/call. Hashed only when set
(gateway.audit.models.LATER), so the rows written before keep their hash.

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("audit_event") as batch:
        batch.add_column(sa.Column("mcp_method", sa.String(), nullable=True))
        batch.add_column(sa.Column("mcp_tool", sa.String(), nullable=True))
        batch.create_index("ix_audit_event_mcp_method", ["mcp_method"])
        batch.create_index("ix_audit_event_mcp_tool", ["mcp_tool"])


def downgrade() -> None:
    with op.batch_alter_table("audit_event") as batch:
        batch.drop_index("ix_audit_event_mcp_tool")
        batch.drop_index("ix_audit_event_mcp_method")
        batch.drop_column("mcp_tool")
        batch.drop_column("mcp_method")
