"""PUT /v1/secrets/{name}/kubernetes in the real app (FastAPI's TestClient, on the root
socket's terms): which Kubernetes namespaces' pods may bind a secret, listed with its
metadata; a bad name or an unknown secret is a clear error."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from gateway.audit.writer import AuditWriter
from gateway.control.api import ControlPlane, create_app
from gateway.control.policy_store import PolicyStore
from gateway.control.secrets import Secrets
from gateway.db import make_engine
from vault.crypto import MasterKey
from vault.store import Vault


@pytest.fixture
def api(tmp_path: Path) -> Iterator[tuple[TestClient, Secrets]]:
    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    writer = AuditWriter(engine, gateway_id="gw")
    writer.start()
    secrets = Secrets(Vault(engine, MasterKey.generate()), None)  # type: ignore[arg-type]
    plane = ControlPlane(engine, writer, PolicyStore(tmp_path / "policies"), secrets)
    with TestClient(create_app(plane, lambda: True, local=True)) as client:
        yield client, secrets
    writer.close()
    engine.dispose()


def test_the_namespaces_whose_pods_may_bind_a_secret(api: tuple[TestClient, Secrets]) -> None:
    client, secrets = api
    assert client.put("/v1/secrets/TOKEN", json={"value": "v-0123"}).status_code == 200
    assert client.get("/v1/secrets").json()[0]["kubernetes_namespaces"] == []
    assert secrets.namespaces("TOKEN") == frozenset()   # no pod may, until someone says
    answer = client.put("/v1/secrets/TOKEN/kubernetes", json={"namespaces": ["team-b", "team-a"]})
    assert answer.json() == {"name": "TOKEN", "kubernetes_namespaces": ["team-a", "team-b"]}
    assert client.get("/v1/secrets").json()[0]["kubernetes_namespaces"] == ["team-a", "team-b"]
    assert secrets.namespaces("TOKEN") == {"team-a", "team-b"}
    assert client.put("/v1/secrets/TOKEN/kubernetes", json={"namespaces": []}).status_code == 200
    assert secrets.namespaces("TOKEN") == frozenset()


@pytest.mark.parametrize(("name", "body", "status", "words"), [
    ("NOPE", {"namespaces": ["team-a"]}, 404, "no secret named 'NOPE'"),
    ("TOKEN", {"namespaces": ["Team_A"]}, 422, "namespaces"),
    ("TOKEN", {}, 422, "namespaces"),
    ("bad-name", {"namespaces": []}, 422, "invalid secret name"),
])
def test_bad_requests_are_clear(api: tuple[TestClient, Secrets], name: str,
                                body: dict[str, object], status: int, words: str) -> None:
    client, _ = api
    client.put("/v1/secrets/TOKEN", json={"value": "v-0123"})
    answer = client.put(f"/v1/secrets/{name}/kubernetes", json=body)
    assert answer.status_code == status
    assert words in answer.text
