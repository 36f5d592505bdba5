"""Bearer API tokens with roles. A token is `sgt_<id>_<secret>`: the id finds the row, the
secret is checked against its stored SHA-256 in constant time. Tokens are shown once, at
creation; only hashes are kept."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from gateway.control.models import ApiToken
from gateway.control.roles import Principal, Role

_TOKEN = re.compile(r"^sgt_([a-z0-9]{10})_([A-Za-z0-9_-]{43})$")


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_token(engine: Engine, role: Role, name: str) -> str:
    token_id = "".join(secrets.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(10))
    secret = secrets.token_urlsafe(32)
    with Session(engine) as session:
        session.add(ApiToken(id=token_id, name=name, role=str(role), secret_hash=_hash(secret)))
        session.commit()
    return f"sgt_{token_id}_{secret}"


def authenticate(engine: Engine, token: str) -> Principal | None:
    match = _TOKEN.match(token.strip())
    if not match:
        return None
    with Session(engine) as session:
        row = session.get(ApiToken, match[1])
        if row is None or row.revoked:
            hmac.compare_digest(_hash(match[2]), "0" * 64)  # same work either way
            return None
        if not hmac.compare_digest(_hash(match[2]), row.secret_hash):
            return None
        return Principal(f"token:{row.id}", row.name, Role(row.role))


def list_tokens(engine: Engine) -> list[ApiToken]:
    with Session(engine) as session:
        return list(session.exec(select(ApiToken).order_by(col(ApiToken.created_at))))


def revoke(engine: Engine, token_id: str) -> bool:
    with Session(engine) as session:
        row = session.get(ApiToken, token_id)
        if row is None:
            return False
        row.revoked = True
        session.add(row)
        session.commit()
        return True
