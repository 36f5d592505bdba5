"""Sandboxes belong to the token that created them, not to its name: two operator tokens
created without a name (both called `operator`) cannot reach each other's sandboxes, nor
can a token named `local` reach what the root socket created."""

from __future__ import annotations

import pytest

from gateway.client import Client
from tests.harness import Gateway, status_of

pytestmark = pytest.mark.integration


def test_tokens_sharing_a_name_do_not_share_sandboxes(gateway: Gateway) -> None:
    first, second = gateway.token("operator"), gateway.token("operator")
    gateway.policy("ownership", [])
    with Client(gateway.api_url, first) as alice, Client(gateway.api_url, second) as mallory, \
            alice.create(policy="ownership") as sandbox:
        assert sandbox.info["owner"].startswith("token:")
        assert status_of(lambda: mallory.sandbox(sandbox.id)) == 403
        assert status_of(lambda: mallory.request(
            "POST", f"/v1/sandboxes/{sandbox.id}/exec", json={"cmd": ["true"]})) == 403
        assert status_of(lambda: list(mallory.audit(f"/v1/sandboxes/{sandbox.id}/audit"))) \
            == 403
        assert status_of(lambda: mallory.request("DELETE", f"/v1/sandboxes/{sandbox.id}")) \
            == 403
        assert sandbox.id not in [s["id"] for s in mallory.sandboxes()]
        assert sandbox.id in [s["id"] for s in alice.sandboxes()]


def test_a_token_named_local_is_not_the_root_socket(gateway: Gateway) -> None:
    impostor = gateway.token("operator", name="local")
    policy = gateway.policy("ownership", [])
    with Client(uds=str(gateway.home / "control.sock")) as root, \
            Client(gateway.api_url, impostor) as client, root.create(policy=str(policy)) as sandbox:
        assert sandbox.info["owner"] == "local"
        assert status_of(lambda: client.sandbox(sandbox.id)) == 403
