"""Provider configurations: checked when set, with errors that say how to fix them and never
show a value; sealed like any secret; `reveal` never hands a configuration to the injector;
a rotation writes only over the version it read."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.db import make_engine
from sandbox_net.testnet.mtls import make_client_pki
from sandbox_net.testnet.tokens import Material, make_material
from vault import providers
from vault.crypto import MasterKey, VaultError
from vault.models import SecretVersion
from vault.providers import ProviderError
from vault.store import Vault, VaultConflict


@pytest.fixture(scope="module")
def material(tmp_path_factory: pytest.TempPathFactory) -> Material:
    return make_material(tmp_path_factory.mktemp("tokens"), "google.example.test", 60)


CC = {"token_url": "https://auth.example.test/token", "client_id": "c",
      "client_secret": "s3cr3t-client-value"}


@pytest.mark.parametrize(("kind", "fields", "message"), [
    ("oauth3", {}, "unknown provider 'oauth3'; use one of oauth2_client_credentials"),
    ("oauth2_client_credentials", {"token_url": "https://a.test/t"},
     "needs client_id, client_secret"),
    ("oauth2_client_credentials", {**CC, "colour": "blue"}, "has no field colour"),
    ("oauth2_client_credentials", {**CC, "token_url": "http://a.test/t"},
     "token_url must be an https:// URL"),
    ("oauth2_client_credentials", {**CC, "token_url": "https://u:p@a.test/t"},
     "must not carry credentials"),
    ("oauth2_client_credentials", {**CC, "auth_method": "private_key_jwt"},
     "auth_method must be one of"),
    ("oauth2_client_credentials", {**CC, "allow_addresses": "127.0.0.0/8"},
     "127.0.0.0/8 is loopback, which the gateway never dials"),
    ("oauth2_client_credentials", {**CC, "allow_addresses": "intranet"},
     "is not an IPv4 network"),
    ("github_app", {"app_id": "1", "installation_id": "x", "private_key": "k"},
     "installation_id is a number"),
    ("github_app", {"app_id": "1", "installation_id": "2", "private_key": "not a key"},
     "private_key is not an unencrypted PEM private key"),
    ("google_service_account", {"service_account": "{}"},
     "must be a JSON key of type service_account"),
    ("mtls_client_cert", {"certificate": "x", "key": "y"}, "not a PEM certificate"),
])
def test_bad_configurations_say_how_to_fix_them(kind: str, fields: dict[str, str],
                                                message: str) -> None:
    with pytest.raises(ProviderError) as caught:
        providers.parse(kind, fields)
    assert message in str(caught.value)
    assert "s3cr3t-client-value" not in str(caught.value)


def test_google_needs_scopes_or_audience_not_both(material: Material) -> None:
    account = material.google_account.read_text()
    for extra in ({}, {"scopes": "a", "audience": "b"}):
        with pytest.raises(ProviderError, match=r"scopes \(an access token\) or audience"):
            providers.parse("google_service_account", {"service_account": account, **extra})
    config = providers.parse("google_service_account",
                             {"service_account": account, "scopes": "a, b c"})
    assert config.scopes() == ["a", "b", "c"]
    assert json.loads(account)["private_key"] in config.secret_values()


def test_a_key_must_belong_to_its_certificate(tmp_path: Path) -> None:
    one, two = make_client_pki(tmp_path / "one"), make_client_pki(tmp_path / "two")
    with pytest.raises(ProviderError, match="key does not belong to the certificate"):
        providers.parse("mtls_client_cert", {"certificate": one.chain.read_text(),
                                             "key": two.key.read_text()})


def test_the_configuration_round_trips_and_never_prints(material: Material) -> None:
    config = providers.parse("github_app", {
        "app_id": "7", "installation_id": "8",
        "private_key": material.github_key.read_text()})
    assert providers.from_text(config.to_text()) == config
    assert "PRIVATE" not in repr(config) and "github_app" in repr(config)


@pytest.fixture
def vault(tmp_path: Path) -> Iterator[Vault]:
    vault = Vault(make_engine(f"sqlite:///{tmp_path / 'v.db'}"), MasterKey.generate())
    yield vault
    vault.engine.dispose()


def test_sealed_never_revealed_to_the_injector(vault: Vault) -> None:
    providers.store(vault, "API", providers.parse("oauth2_client_credentials", CC))
    with pytest.raises(VaultError, match="minted by the gateway"):
        vault.reveal("API")
    current, sealed = vault.reveal_provider("API")
    assert current.provider == "oauth2_client_credentials"
    assert providers.from_text(sealed.reveal()).get("client_secret") == CC["client_secret"]
    from sqlmodel import Session, select
    with Session(vault.engine) as session:
        rows = session.exec(select(SecretVersion)).all()
    assert rows and all(CC["client_secret"].encode() not in r.ciphertext for r in rows)
    vault.put("PLAIN", "v")
    with pytest.raises(VaultError, match="a stored value, not a provider"):
        vault.reveal_provider("PLAIN")


def test_a_write_expecting_a_version_loses_to_a_newer_one(vault: Vault) -> None:
    providers.store(vault, "API", providers.parse("oauth2_client_credentials", CC))
    seen = vault.current("API", fresh=True)
    assert seen is not None
    vault.put("API", "{}", provider="oauth2_client_credentials")
    with pytest.raises(VaultConflict):
        vault.put("API", "{}", provider="oauth2_client_credentials", expect=seen.generation)
    latest = vault.current("API", fresh=True)
    assert latest is not None
    assert vault.put("API", "{}", provider="oauth2_client_credentials",
                     expect=latest.generation) == 3


def test_state_and_certificate_expiry(vault: Vault, tmp_path: Path) -> None:
    pki = make_client_pki(tmp_path / "pki")
    providers.store(vault, "CERT", providers.parse("mtls_client_cert", {
        "certificate": pki.chain.read_text(), "key": pki.key.read_text()}))
    info = vault.list()[0]
    assert (info.provider, info.refreshed_at, info.error) == ("mtls_client_cert", None, None)
    assert info.expires_at is not None
    vault.set_state("CERT", error="x" * 900)
    info = vault.list()[0]
    assert info.error == "x" * 500 and info.error_at is not None
    vault.put("CERT", "now a plain value")    # another kind: the old state is moot
    info = vault.list()[0]
    assert (info.provider, info.expires_at, info.error) == (None, None, None)
