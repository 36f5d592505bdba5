"""`sandgate token ...`: API tokens for the control API over TCP."""

from __future__ import annotations

import re

import click

from gateway.cli.common import fail, make_settings, print_table, writable_home
from gateway.control.roles import Role

TOKEN_ID = re.compile(r"^[a-z0-9]{10}$")


@click.group("token")
def token_group() -> None:
    """Create, list and revoke control API tokens."""


def _engine():  # type: ignore[no-untyped-def]
    from gateway.db import make_engine

    settings = make_settings()
    writable_home(settings)
    return make_engine(settings.db_url)


@token_group.command()
@click.option("--role", required=True, type=click.Choice([str(r) for r in Role]))
@click.option("--name", help="who or what holds it (default: ROLE)")
def create(role: str, name: str | None) -> None:
    """Create a token; it is printed once, as the last line, and stored only hashed."""
    from gateway.control.auth import create_token

    if name is not None and not re.match(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$", name):
        fail(f"invalid token name {name!r}", "letters, digits, '.', '_', '@', '-'")
    engine = _engine()
    token = create_token(engine, Role(role), name or role)
    engine.dispose()
    click.echo(f"token for {name or role} (role {role}); store it now, it is not shown again:",
               err=True)
    click.echo(token)


@token_group.command("list")
def list_tokens() -> None:
    """Tokens by id, name and role (never the token itself)."""
    from gateway.control.auth import list_tokens as rows

    engine = _engine()
    tokens = rows(engine)
    engine.dispose()
    if not tokens:
        click.echo("no tokens")
        return
    print_table([{"id": t.id, "name": t.name, "role": t.role,
                  "created": t.created_at.isoformat(timespec="seconds"),
                  "revoked": "yes" if t.revoked else ""} for t in tokens])


@token_group.command()
@click.argument("token_id")
def revoke(token_id: str) -> None:
    """Revoke a token by its id (see token list; a whole token is accepted too, and never
    printed back)."""
    from gateway.control.auth import revoke as do_revoke

    if token_id.startswith("sgt_"):   # a whole token: its id is the part after sgt_
        token_id = token_id.split("_")[1] if token_id.count("_") >= 2 else ""
    if not TOKEN_ID.match(token_id):
        fail("that is not a token id (10 lower-case letters and digits)",
             "see: sandgate token list")
    engine = _engine()
    found = do_revoke(engine, token_id)
    engine.dispose()
    if not found:
        fail(f"no token with id {token_id!r}", "see: sandgate token list")
    click.echo(f"revoked {token_id}")
