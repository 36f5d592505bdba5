"""Each provider's flow, spoken by a maintained library: Authlib for OAuth2 (client
credentials; refresh token, with rotation), PyJWT for the GitHub App's JWT, google-auth for
service accounts (an access token for scopes, or an ID token for an audience). Every flow
gets its HTTP session from `prepare` (gateway.providers.transport.vet in the gateway).

Failures become MintError, whose message names what went wrong (status, OAuth error code)
and never holds a secret value."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import google.auth.exceptions
import google.auth.transport.requests
import jwt
import requests
from authlib.integrations.base_client.errors import OAuthError
from authlib.integrations.requests_client import OAuth2Session
from google.oauth2 import service_account

from policies.schema import Narrow
from vault import providers as kinds
from vault.providers import ProviderConfig
from vault.secret import SecretValue

type Prepare = Callable[[requests.Session], None]

GITHUB_JWT_SECONDS = 540      # GitHub takes at most 10 minutes; leave room for clock skew
UNKNOWN_LIFETIME = 300.0      # seconds a token without an expiry is used before minting again


class MintError(Exception):
    """The provider did not give a value; the message says why, never holding a secret."""


@dataclass(frozen=True, slots=True)
class Minted:
    value: SecretValue
    expires_at: float | None              # epoch seconds; None: the provider did not say
    rotated: ProviderConfig | None = None  # the configuration with a new refresh token

    def __repr__(self) -> str:
        return f"Minted(expires_at={self.expires_at}, rotated={self.rotated is not None})"


def _only(narrow: Narrow | None, kind: str, *allowed: str) -> None:
    if narrow is None:
        return
    given = [name for name in ("repositories", "permissions", "scopes", "audience")
             if getattr(narrow, name)]
    wrong = [name for name in given if name not in allowed]
    if wrong:
        raise MintError(f"a {kind} secret cannot be narrowed by {', '.join(wrong)} "
                        f"(it takes {', '.join(allowed)})")


# OAuth2
def _oauth2_session(config: ProviderConfig, scopes: list[str]) -> OAuth2Session:
    secret = config.get("client_secret") or None
    method = config.get("auth_method", kinds.AUTH_METHODS[0]) if secret else "none"
    return OAuth2Session(config.get("client_id"), secret, scope=" ".join(scopes) or None,
                         token_endpoint_auth_method=method)


def _oauth2_minted(token: dict[str, Any]) -> tuple[SecretValue, float | None]:
    access = token.get("access_token")
    if not isinstance(access, str) or not access:
        raise MintError("the token endpoint answered without an access_token")
    expires = token.get("expires_at")
    return SecretValue(access), float(expires) if expires else None


def client_credentials(config: ProviderConfig, narrow: Narrow | None,
                       prepare: Prepare) -> Minted:
    _only(narrow, config.kind, "scopes")
    scopes = list(narrow.scopes) if narrow and narrow.scopes else config.scopes()
    extra = {"audience": config.get("audience")} if config.get("audience") else {}
    with _oauth2_session(config, scopes) as session:
        prepare(session)
        token = session.fetch_token(config.get("token_url"), grant_type="client_credentials",
                                    **extra)
    value, expires = _oauth2_minted(token)
    return Minted(value, expires)


def refresh_token(config: ProviderConfig, narrow: Narrow | None, prepare: Prepare) -> Minted:
    _only(narrow, config.kind, "scopes")
    scopes = list(narrow.scopes) if narrow and narrow.scopes else config.scopes()
    old = config.get("refresh_token")
    with _oauth2_session(config, scopes) as session:
        prepare(session)
        token = session.refresh_token(config.get("token_url"), refresh_token=old)
    value, expires = _oauth2_minted(token)
    new = token.get("refresh_token")
    rotated = config.with_field("refresh_token", new) \
        if isinstance(new, str) and new and new != old else None
    return Minted(value, expires, rotated)


# GitHub App
def github_app(config: ProviderConfig, narrow: Narrow | None, prepare: Prepare) -> Minted:
    _only(narrow, config.kind, "repositories", "permissions")
    now = int(time.time())
    assertion = jwt.encode({"iat": now - 60, "exp": now + GITHUB_JWT_SECONDS,
                            "iss": config.get("app_id")},
                           config.get("private_key"), algorithm="RS256")
    body: dict[str, Any] = {}
    if narrow is not None and narrow.repositories:
        body["repositories"] = list(narrow.repositories)
    if narrow is not None and narrow.permissions:
        body["permissions"] = dict(narrow.permissions)
    api = config.get("api_url", kinds.GITHUB_API).rstrip("/")
    with requests.Session() as session:
        prepare(session)
        response = session.post(
            f"{api}/app/installations/{config.get('installation_id')}/access_tokens",
            json=body or None, headers={"Accept": "application/vnd.github+json",
                                        "Authorization": f"Bearer {assertion}",
                                        "X-GitHub-Api-Version": "2022-11-28"})
    data = _json(response)
    if response.status_code != 201 or not isinstance(data.get("token"), str):
        raise MintError(f"GitHub answered {response.status_code}"
                        + (f": {data['message']}" if isinstance(data.get("message"), str)
                           else ""))
    expires = data.get("expires_at")
    return Minted(SecretValue(data["token"]),
                  datetime.fromisoformat(expires.replace("Z", "+00:00")).timestamp()
                  if isinstance(expires, str) else None)


def _json(response: requests.Response) -> dict[str, Any]:
    try:
        data = response.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


# Google service account
def google_service_account(config: ProviderConfig, narrow: Narrow | None,
                           prepare: Prepare) -> Minted:
    _only(narrow, config.kind, "scopes", "audience")
    info = json.loads(config.get("service_account"))
    audience = narrow.audience if narrow and narrow.audience else None
    scopes = list(narrow.scopes) if narrow and narrow.scopes else None
    if audience is None and scopes is None:
        audience, scopes = config.get("audience") or None, config.scopes()
    credentials: service_account.Credentials | service_account.IDTokenCredentials
    if audience:
        credentials = service_account.IDTokenCredentials.from_service_account_info(
            info, target_audience=audience)
    else:
        credentials = service_account.Credentials.from_service_account_info(
            info, scopes=scopes)
    with requests.Session() as session:
        prepare(session)
        credentials.refresh(google.auth.transport.requests.Request(session))
    expiry = credentials.expiry
    if not isinstance(credentials.token, str) or not credentials.token:
        raise MintError("the token endpoint answered without a token")
    return Minted(SecretValue(credentials.token),
                  expiry.replace(tzinfo=UTC).timestamp() if expiry else None)


FLOWS: dict[str, Callable[[ProviderConfig, Narrow | None, Prepare], Minted]] = {
    kinds.OAUTH2_CLIENT_CREDENTIALS: client_credentials,
    kinds.OAUTH2_REFRESH_TOKEN: refresh_token,
    kinds.GITHUB_APP: github_app,
    kinds.GOOGLE_SERVICE_ACCOUNT: google_service_account,
}


def mint(config: ProviderConfig, narrow: Narrow | None, prepare: Prepare) -> Minted:
    """A fresh value from the provider; MintError with a safe message otherwise."""
    flow = FLOWS.get(config.kind)
    if flow is None:
        raise MintError(f"a {config.kind} secret is not minted")
    with _failures(config):
        return flow(config, narrow, prepare)


@contextmanager
def _failures(config: ProviderConfig) -> Iterator[None]:
    try:
        yield
    except MintError as e:
        raise MintError(redact(str(e), config)) from None
    except OAuthError as e:
        text = f"the token endpoint refused: {e.error}"
        if e.description:
            text += f" ({e.description})"
        raise MintError(redact(text, config)) from None
    except google.auth.exceptions.RefreshError as e:
        text = str(e.args[0]) if e.args else "refused"
        raise MintError(redact(f"the token endpoint refused: {text}", config)) from None
    except google.auth.exceptions.TransportError as e:
        raise MintError(redact(f"the token endpoint cannot be reached: {e}", config)) from None
    except requests.HTTPError as e:
        status = e.response.status_code if e.response is not None else "?"
        raise MintError(f"the token endpoint answered {status}") from None
    except requests.RequestException as e:
        raise MintError(redact(f"the token endpoint cannot be reached: {e}", config)) \
            from None
    except (ValueError, KeyError, TypeError) as e:
        raise MintError(redact(f"the token endpoint's answer is not usable: {e}", config)) \
            from None


def redact(text: str, config: ProviderConfig) -> str:
    """`text` without any secret of the configuration, cut to a line."""
    for value in config.secret_values():
        for part in (value, value.strip()):
            if len(part) >= 4:
                text = text.replace(part, "[redacted]")
    return " ".join(text.split())[:300]
