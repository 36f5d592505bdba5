"""Sandboxes are owned by the token's unique id (`token:<id>`, or `local` for the root
socket), no longer by the token's name, which any number of tokens may share.

A name that belonged to exactly one token becomes that token's id; a name shared by several
tokens (or by none) becomes `legacy:<name>`, which no caller is, so only admins reach those
sandboxes. Audit rows keep the owner they were written with: they are hash-chained.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    conn = op.get_bind()
    by_name: dict[str, list[str]] = {}
    for token_id, name in conn.execute(sa.text("SELECT id, name FROM api_token")):
        by_name.setdefault(name, []).append(token_id)
    owners = [row[0] for row in conn.execute(sa.text(
        "SELECT DISTINCT owner FROM sandbox WHERE owner IS NOT NULL AND owner != 'local'"))]
    for owner in owners:
        ids = by_name.get(owner, [])
        new = f"token:{ids[0]}" if len(ids) == 1 else f"legacy:{owner}"
        conn.execute(sa.text("UPDATE sandbox SET owner = :new WHERE owner = :old"),
                     {"new": new, "old": owner})


def downgrade() -> None:
    conn = op.get_bind()
    names: dict[str, str] = dict(conn.execute(sa.text("SELECT id, name FROM api_token")).fetchall())
    owners = [row[0] for row in conn.execute(sa.text(
        "SELECT DISTINCT owner FROM sandbox WHERE owner LIKE 'token:%' OR "
        "owner LIKE 'legacy:%'"))]
    for owner in owners:
        kind, _, value = owner.partition(":")
        old = names.get(value, value) if kind == "token" else value
        conn.execute(sa.text("UPDATE sandbox SET owner = :old WHERE owner = :new"),
                     {"old": old, "new": owner})
