"""Sandbox images: the image (name and content id) a sandbox runs on, the user its commands
run as, the size of its writable tmpfs.

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

COLUMNS = (
    sa.Column("image", sa.String(), nullable=True),
    sa.Column("image_id", sa.String(), nullable=True),
    sa.Column("run_as", sa.String(), nullable=True),
    sa.Column("disk_mb", sa.Integer(), nullable=True),
)


def upgrade() -> None:
    with op.batch_alter_table("sandbox") as batch:
        for column in COLUMNS:
            batch.add_column(column)


def downgrade() -> None:
    with op.batch_alter_table("sandbox") as batch:
        for column in reversed(COLUMNS):
            batch.drop_column(column.name)
