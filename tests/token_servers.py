"""The test token servers (sandbox_net.testnet.tokens: Authlib's OAuth2 server, the
GitHub- and Google-shaped endpoints) in this process, for unit tests, and provider
configurations for them. The fixtures are in tests/gateway/conftest.py."""

from __future__ import annotations

from typing import Any

from flask import Flask

from sandbox_net.testnet.tokens import Material, make_app
from vault import providers
from vault.providers import ProviderConfig

TOKEN_URL = "https://auth.example.test/oauth/token"


class Servers:
    def __init__(self, material: Material) -> None:
        self.material = material
        self.events: list[dict[str, Any]] = []
        self.app: Flask = make_app(material.spec(), self.write)
        self.client = self.app.test_client()

    def write(self, kind: str, **fields: Any) -> None:
        self.events.append({"kind": kind, **fields})

    def issued(self, api: str | None = None) -> list[dict[str, Any]]:
        return [e for e in self.events if e["kind"] == "token-issued"
                and (api is None or e["api"] == api)]

    def consent(self) -> str:
        """A refresh token for the refresh-token client (what a user's consent gives)."""
        answer = self.client.post("/oauth/issue", data={"client_id": self.material.rt_client})
        return str(answer.get_json()["refresh_token"])

    def revoke(self) -> None:
        self.client.post("/oauth/revoke", data={"client_id": self.material.rt_client})

    def api(self, path: str, token: str) -> int:
        return int(self.client.get(path, headers={"authorization": f"Bearer {token}"})
                   .status_code)

    # configurations
    def client_credentials(self, **extra: str) -> ProviderConfig:
        return providers.parse(providers.OAUTH2_CLIENT_CREDENTIALS, {
            "token_url": TOKEN_URL, "client_id": self.material.cc_client,
            "client_secret": self.material.cc_secret, "scopes": "read", **extra})

    def refresh_token(self, refresh: str) -> ProviderConfig:
        return providers.parse(providers.OAUTH2_REFRESH_TOKEN, {
            "token_url": TOKEN_URL, "client_id": self.material.rt_client,
            "client_secret": self.material.rt_secret, "refresh_token": refresh})

    def github(self) -> ProviderConfig:
        return providers.parse(providers.GITHUB_APP, {
            "app_id": self.material.github_app_id,
            "installation_id": self.material.github_installation,
            "private_key": self.material.github_key.read_text(),
            "api_url": "https://github.example.test/github"})

    def google(self, **mode: str) -> ProviderConfig:
        return providers.parse(providers.GOOGLE_SERVICE_ACCOUNT, {
            "service_account": self.material.google_account.read_text(),
            **(mode or {"scopes": "https://www.googleapis.com/auth/cloud-platform"})})
