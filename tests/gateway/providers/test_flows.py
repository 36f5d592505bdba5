"""Each provider's flow against real token servers (Authlib's OAuth2 server, the GitHub- and
Google-shaped endpoints, in this process): the value they mint is one the API accepts, narrowing
reaches the endpoint, refresh tokens rotate, and failures say why without a secret."""

from __future__ import annotations

import json

import pytest

from gateway.providers import flows
from gateway.providers.flows import MintError
from gateway.providers.transport import Exchange
from policies.schema import Narrow
from tests.doubles import wsgi_connector
from tests.token_servers import Servers


def prepare(servers: Servers) -> flows.Prepare:
    exchanges: list[Exchange] = []
    return wsgi_connector(servers.app)([], exchanges)


def test_client_credentials_mints_a_token_the_api_takes(servers: Servers) -> None:
    minted = flows.mint(servers.client_credentials(), None, prepare(servers))
    token = minted.value.reveal()
    assert servers.api("/oauth/api", token) == 200
    assert servers.issued("oauth")[-1]["token"] == token
    assert minted.expires_at is not None and minted.rotated is None


def test_client_credentials_narrowed_to_scopes(servers: Servers) -> None:
    flows.mint(servers.client_credentials(scopes="read write"),
               Narrow(scopes=("write",)), prepare(servers))
    token = servers.issued("oauth")[-1]["token"]
    assert servers.app.test_client().get(
        "/oauth/api", headers={"authorization": f"Bearer {token}"}).status_code == 200


def test_refresh_token_rotates_and_the_old_one_is_spent(servers: Servers) -> None:
    first = servers.consent()
    config = servers.refresh_token(first)
    minted = flows.mint(config, None, prepare(servers))
    assert servers.api("/oauth/api", minted.value.reveal()) == 200
    assert minted.rotated is not None
    second = minted.rotated.get("refresh_token")
    assert second not in ("", first)
    assert minted.rotated.get("client_secret") == config.get("client_secret")
    with pytest.raises(MintError, match="invalid_grant"):
        flows.mint(config, None, prepare(servers))          # the spent one
    assert flows.mint(minted.rotated, None, prepare(servers)).rotated is not None


def test_a_revoked_refresh_token_fails_with_the_reason_and_no_secret(servers: Servers) -> None:
    config = servers.refresh_token(servers.consent())
    servers.revoke()
    with pytest.raises(MintError) as caught:
        flows.mint(config, None, prepare(servers))
    message = str(caught.value)
    assert "invalid_grant" in message
    assert config.get("refresh_token") not in message
    assert servers.material.rt_secret not in message


def test_a_wrong_client_secret_is_refused_without_showing_it(servers: Servers) -> None:
    config = servers.client_credentials().with_field("client_secret", "wrong-secret-value")
    with pytest.raises(MintError, match="invalid_client") as caught:
        flows.mint(config, None, prepare(servers))
    assert "wrong-secret-value" not in str(caught.value)


def test_github_app_jwt_is_verified_and_the_token_narrowed(servers: Servers) -> None:
    narrow = Narrow.model_validate({"repositories": ["hello"],
                                    "permissions": {"contents": "read"}})
    minted = flows.mint(servers.github(), narrow, prepare(servers))
    issued = servers.issued("github")[-1]
    assert issued["token"] == minted.value.reveal()
    assert (issued["repositories"], issued["permissions"]) == (["hello"], {"contents": "read"})
    assert servers.api("/github/repos/octo/hello", minted.value.reveal()) == 200
    assert servers.api("/github/repos/octo/other", minted.value.reveal()) == 401


def test_github_app_signed_with_another_key_is_refused(servers: Servers,
                                                       tmp_path: object) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    other = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()).decode()
    with pytest.raises(MintError, match="GitHub answered 401"):
        flows.mint(servers.github().with_field("private_key", other), None, prepare(servers))
    assert servers.events[-1]["kind"] == "app-jwt-refused"


def test_github_cannot_be_narrowed_by_scopes(servers: Servers) -> None:
    with pytest.raises(MintError, match="cannot be narrowed by scopes"):
        flows.mint(servers.github(), Narrow(scopes=("repo",)), prepare(servers))


def test_google_access_token_and_id_token(servers: Servers) -> None:
    access = flows.mint(servers.google(), None, prepare(servers))
    assert servers.api("/google/api", access.value.reveal()) == 200
    audience = servers.material.google_audience
    identity = flows.mint(servers.google(audience=audience), None, prepare(servers))
    assert servers.api("/google/id-api", identity.value.reveal()) == 200
    assert identity.expires_at is not None
    # narrowed to an audience, a scopes-configured account mints an ID token
    narrowed = flows.mint(servers.google(), Narrow(audience=audience), prepare(servers))
    assert servers.issued("google")[-1]["id_token"] is True
    assert servers.api("/google/id-api", narrowed.value.reveal()) == 200


def test_google_assertion_signed_with_another_key_is_refused(servers: Servers) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    account = json.loads(servers.material.google_account.read_text())
    account["private_key"] = rsa.generate_private_key(
        public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()).decode()
    config = servers.google().with_field("service_account", json.dumps(account))
    with pytest.raises(MintError, match="invalid_grant") as caught:
        flows.mint(config, None, prepare(servers))
    assert "PRIVATE KEY" not in str(caught.value)


def test_an_mtls_secret_is_not_minted(servers: Servers) -> None:
    from vault.providers import ProviderConfig
    with pytest.raises(MintError, match="not minted"):
        flows.mint(ProviderConfig("mtls_client_cert", {}), None, prepare(servers))
