"""Who is calling, and whether they may: the `Caller` dependency of every route."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.engine import Engine

from gateway.control.api.errors import Forbidden, Unauthorized
from gateway.control.auth import authenticate
from gateway.control.roles import LOCAL_ROOT, Principal, Scope


class Guard:
    """On the root-only socket the caller is the local administrator; over TCP, whoever the
    bearer token names. Kept in the app's state (create_app)."""

    def __init__(self, engine: Engine, local: bool) -> None:
        self.engine = engine
        self.local = local

    def principal(self, header: str) -> Principal:
        if self.local:
            return LOCAL_ROOT
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise Unauthorized("missing bearer token",
                               "send Authorization: Bearer <token> (sandgate token create)")
        found = authenticate(self.engine, token)
        if found is None:
            raise Unauthorized("invalid or revoked token")
        return found


def _caller(request: Request) -> Principal:
    guard: Guard = request.app.state.guard
    return guard.principal(request.headers.get("authorization", ""))


Caller = Annotated[Principal, Depends(_caller)]


def need(caller: Principal, scope: Scope) -> None:
    if not caller.may(scope):
        raise Forbidden(f"role {caller.role} may not use {scope}",
                        "ask an admin for a token with a role that grants it")
