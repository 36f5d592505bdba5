"""/v1/approvals on a real approval book and database, through FastAPI's test client: the
decider is recorded, bad ids and scopes are 4xx (never a driver error), a second decision
is a 409, and roles without the policies scope are refused."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from gateway.approvals.ask import Ask
from gateway.approvals.book import ApprovalBook
from gateway.control.api import approvals, errors
from gateway.control.api.deps import Guard
from gateway.control.auth import create_token
from gateway.control.roles import Role
from gateway.db import make_engine


@pytest.fixture
def api(tmp_path: Path) -> Iterator[tuple[TestClient, ApprovalBook]]:
    engine = make_engine(f"sqlite:///{tmp_path / 'a.db'}")
    rows: list[dict[str, object]] = []
    book = ApprovalBook(engine, rows.append, gateway_id="gw", timeout=60)
    app = FastAPI()
    errors.install(app)
    app.state.guard = Guard(engine, local=False)
    app.include_router(approvals.router(book))
    with TestClient(app) as client:
        yield client, book
    engine.dispose()


def bearer(book: ApprovalBook, role: Role, name: str) -> dict[str, str]:
    return {"authorization": f"Bearer {create_token(book.engine, role, name)}"}


def test_a_decision_names_the_token_and_cannot_be_made_twice(
        api: tuple[TestClient, ApprovalBook]) -> None:
    client, book = api
    record = book._insert(Ask("sb1", None, "web", "v1", "w", "https", "api.test", 443,
                              "POST", "/x"))
    security = bearer(book, Role.SECURITY, "sec-team")
    [listed] = client.get("/v1/approvals?status=pending", headers=security).json()
    assert listed["id"] == record.id
    answer = client.post(f"/v1/approvals/{record.id}/allow", json={"for": "sandbox"},
                         headers=security)
    assert answer.status_code == 200, answer.text
    assert (answer.json()["status"], answer.json()["scope"]) == ("allowed", "sandbox")
    assert answer.json()["decided_by"].startswith("sec-team (token:")
    again = client.post(f"/v1/approvals/{record.id}/deny", headers=security)
    assert again.status_code == 409 and "already allowed" in again.json()["detail"]
    revoked = client.post(f"/v1/approvals/{record.id}/revoke", headers=security)
    assert revoked.status_code == 200, revoked.text
    assert revoked.json()["status"] == "revoked"
    assert revoked.json()["revoked_by"].startswith("sec-team (token:")
    [listed] = client.get("/v1/approvals?status=revoked", headers=security).json()
    assert listed["id"] == record.id
    twice = client.post(f"/v1/approvals/{record.id}/revoke", headers=security)
    assert twice.status_code == 409 and "not a standing allow" in twice.json()["detail"]
    auditor = bearer(book, Role.AUDITOR, "aud")
    assert client.post(f"/v1/approvals/{record.id}/revoke", headers=auditor).status_code == 403


@pytest.mark.parametrize(("method", "path", "body", "status"), [
    ("GET", "/v1/approvals/99999999999999999999999", None, 422),
    ("GET", "/v1/approvals/0", None, 422),
    ("GET", "/v1/approvals/5", None, 404),
    ("POST", "/v1/approvals/5/allow", None, 404),
    ("POST", "/v1/approvals/5/allow", {"for": "ever"}, 422),
    ("POST", "/v1/approvals/5/revoke", None, 404),
    ("GET", "/v1/approvals?status=maybe", None, 422),
])
def test_bad_input_is_a_client_error(api: tuple[TestClient, ApprovalBook], method: str,
                                     path: str, body: object, status: int) -> None:
    client, book = api
    headers = bearer(book, Role.ADMIN, "admin")
    assert client.request(method, path, json=body, headers=headers).status_code == status


def test_only_roles_that_write_policies_decide(api: tuple[TestClient, ApprovalBook]) -> None:
    client, book = api
    for role in (Role.OPERATOR, Role.AUDITOR):
        response = client.get("/v1/approvals", headers=bearer(book, role, str(role)))
        assert response.status_code == 403
    assert client.get("/v1/approvals").status_code == 401
