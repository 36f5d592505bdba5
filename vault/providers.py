"""Provider secrets: a secret whose value the gateway mints (an OAuth2 access token, a GitHub
App installation token, a Google access or ID token) or presents (an mTLS client
certificate) instead of storing it. The secret's sealed value is the provider's
configuration, checked here when it is set; gateway.providers mints from it.

    kind                        fields (* secret: given as a file, never on a command line)
    oauth2_client_credentials   token_url client_id client_secret* [scopes audience auth_method]
    oauth2_refresh_token        token_url client_id refresh_token* [client_secret* scopes
                                auth_method]  (a rotated refresh token is stored back)
    github_app                  app_id installation_id private_key* [api_url]
    google_service_account      service_account* (the JSON key), and scopes or audience
    mtls_client_cert            certificate key*  (presented upstream, never injected)

Every minting kind also takes `allow_addresses`: networks (CIDR) its token endpoint may
resolve into although they are private (the gateway refuses them otherwise, as for any
upstream).
"""

from __future__ import annotations

import ipaddress
import json
import re
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from policies.addresses import never_dialable
from vault.store import Vault


class ProviderError(ValueError):
    """A provider configuration that cannot work; the message says how to fix it and never
    holds a secret value."""


@dataclass(frozen=True, slots=True)
class Kind:
    name: str
    required: tuple[str, ...]
    optional: tuple[str, ...] = ()
    secret: frozenset[str] = frozenset()
    mints: bool = True

    @property
    def fields(self) -> tuple[str, ...]:
        return (*self.required, *self.optional, *(("allow_addresses",) if self.mints else ()))


OAUTH2_CLIENT_CREDENTIALS = "oauth2_client_credentials"
OAUTH2_REFRESH_TOKEN = "oauth2_refresh_token"  # noqa: S105 - a kind's name
GITHUB_APP = "github_app"
GOOGLE_SERVICE_ACCOUNT = "google_service_account"
MTLS_CLIENT_CERT = "mtls_client_cert"

KINDS = {k.name: k for k in (
    Kind(OAUTH2_CLIENT_CREDENTIALS, ("token_url", "client_id", "client_secret"),
         ("scopes", "audience", "auth_method"), frozenset({"client_secret"})),
    Kind(OAUTH2_REFRESH_TOKEN, ("token_url", "client_id", "refresh_token"),
         ("client_secret", "scopes", "auth_method"),
         frozenset({"client_secret", "refresh_token"})),
    Kind(GITHUB_APP, ("app_id", "installation_id", "private_key"), ("api_url",),
         frozenset({"private_key"})),
    Kind(GOOGLE_SERVICE_ACCOUNT, ("service_account",), ("scopes", "audience"),
         frozenset({"service_account"})),
    Kind(MTLS_CLIENT_CERT, ("certificate", "key"), (), frozenset({"key"}), mints=False),
)}
AUTH_METHODS = ("client_secret_basic", "client_secret_post")
GITHUB_API = "https://api.github.com"


@dataclass(frozen=True)
class ProviderConfig:
    """A checked configuration. Its repr names the kind and the field names only."""

    kind: str
    fields: Mapping[str, str] = field(repr=False)

    def get(self, name: str, default: str = "") -> str:
        return self.fields.get(name, default)

    @property
    def spec(self) -> Kind:
        return KINDS[self.kind]

    def secret_values(self) -> list[str]:
        """The values to keep out of any message (also the key inside a service account)."""
        values = [v for k, v in self.fields.items() if k in self.spec.secret]
        if self.kind == GOOGLE_SERVICE_ACCOUNT:
            values.append(json.loads(self.fields["service_account"])["private_key"])
        return values

    def scopes(self) -> list[str]:
        return split_list(self.get("scopes"))

    def allowed_networks(self) -> list[ipaddress.IPv4Network]:
        return [ipaddress.IPv4Network(n) for n in split_list(self.get("allow_addresses"))]

    def to_text(self) -> str:
        """The sealed form (the secret's value)."""
        return json.dumps({"provider": self.kind, "fields": dict(self.fields)},
                          sort_keys=True)

    def with_field(self, name: str, value: str) -> ProviderConfig:
        return ProviderConfig(self.kind, {**self.fields, name: value})


def store(vault: Vault, name: str, config: ProviderConfig) -> int:
    """Seal `config` as the new version of secret `name`; a certificate's expiry becomes its
    state at once (nothing is minted for it)."""
    version = vault.put(name, config.to_text(), provider=config.kind)
    if config.kind == MTLS_CLIENT_CERT:
        chain, _key = identity_parts(config)
        vault.set_state(name, expires_at=chain[0].not_valid_after_utc)
    return version


def split_list(text: str) -> list[str]:
    """`a b`, `a,b` or `a, b`: a list of scopes, CIDRs or names."""
    return [part for part in re.split(r"[\s,]+", text.strip()) if part]


def from_text(text: str) -> ProviderConfig:
    """The configuration a provider secret holds (written by `ProviderConfig.to_text`)."""
    data = json.loads(text)
    return ProviderConfig(data["provider"], data["fields"])


def parse(kind: str, fields: Mapping[str, str]) -> ProviderConfig:
    """Check a configuration as given by `sandgate secret set --provider` or the API."""
    spec = KINDS.get(kind)
    if spec is None:
        raise ProviderError(f"unknown provider {kind!r}; use one of {', '.join(KINDS)}")
    unknown = sorted(set(fields) - set(spec.fields))
    if unknown:
        raise ProviderError(f"{kind} has no field {', '.join(unknown)}; its fields are "
                            f"{', '.join(spec.fields)}")
    cleaned = {k: v.strip() if k not in ("certificate", "key", "private_key",
                                         "service_account") else v
               for k, v in fields.items() if v.strip()}
    missing = [f for f in spec.required if f not in cleaned]
    if missing:
        raise ProviderError(f"{kind} needs {', '.join(missing)} "
                            f"(secret ones as --file NAME=PATH)")
    config = ProviderConfig(kind, cleaned)
    _CHECKS[kind](config)
    _check_networks(config)
    return config


def _check_url(name: str, url: str) -> None:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        raise ProviderError(f"{name} must be an https:// URL (a token endpoint is reached "
                            f"over TLS only), got {url!r}")
    if parts.username or parts.password:
        raise ProviderError(f"{name} must not carry credentials in the URL")


def _check_networks(config: ProviderConfig) -> None:
    for text in split_list(config.get("allow_addresses")):
        try:
            network = ipaddress.IPv4Network(text, strict=False)
        except ValueError:
            raise ProviderError(f"allow_addresses: {text!r} is not an IPv4 network") from None
        label = never_dialable(network)
        if label:
            raise ProviderError(f"allow_addresses: {text} is {label}, which the gateway "
                                "never dials")


def _check_oauth2(config: ProviderConfig) -> None:
    _check_url("token_url", config.get("token_url"))
    method = config.get("auth_method", AUTH_METHODS[0])
    if method not in AUTH_METHODS:
        raise ProviderError(f"auth_method must be one of {', '.join(AUTH_METHODS)}")


def _check_github(config: ProviderConfig) -> None:
    if not config.get("installation_id").isdigit():
        raise ProviderError("installation_id is a number (the installation's id)")
    if not re.fullmatch(r"[A-Za-z0-9.]+", config.get("app_id")):
        raise ProviderError("app_id is the app's id or client id")
    _check_url("api_url", config.get("api_url", GITHUB_API))
    key = _private_key(config.get("private_key"), "private_key")
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ProviderError("private_key must be the app's RSA key (GitHub signs with RS256)")


def _check_google(config: ProviderConfig) -> None:
    try:
        info = json.loads(config.get("service_account"))
    except ValueError:
        raise ProviderError("service_account must be the service account's JSON key file") \
            from None
    if not isinstance(info, dict) or info.get("type") != "service_account" or \
            not all(isinstance(info.get(k), str) for k in ("client_email", "private_key")):
        raise ProviderError("service_account must be a JSON key of type service_account "
                            "with client_email and private_key")
    _private_key(info["private_key"], "service_account's private_key")
    _check_url("service_account's token_uri",
               info.get("token_uri", "https://oauth2.googleapis.com/token"))
    if bool(config.get("scopes")) == bool(config.get("audience")):
        raise ProviderError("google_service_account needs scopes (an access token) or "
                            "audience (an ID token), one of the two")


def _check_mtls(config: ProviderConfig) -> None:
    identity_parts(config)


def _private_key(pem: str, name: str) -> object:
    try:
        return serialization.load_pem_private_key(pem.encode(), password=None)
    except (ValueError, TypeError):
        raise ProviderError(f"{name} is not an unencrypted PEM private key") from None


def identity_parts(config: ProviderConfig) -> tuple[list[x509.Certificate], object]:
    """An mTLS configuration's certificate chain (leaf first) and key, checked to belong
    together."""
    try:
        chain = x509.load_pem_x509_certificates(config.get("certificate").encode())
    except ValueError:
        raise ProviderError("certificate is not a PEM certificate (chain)") from None
    key = _private_key(config.get("key"), "key")
    public = getattr(key, "public_key", None)
    if public is None or public().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo) != \
            chain[0].public_key().public_bytes(serialization.Encoding.DER,
                                               serialization.PublicFormat.SubjectPublicKeyInfo):
        raise ProviderError("key does not belong to the certificate (the first one in the "
                            "file must be the client's own)")
    return chain, key


_CHECKS = {OAUTH2_CLIENT_CREDENTIALS: _check_oauth2, OAUTH2_REFRESH_TOKEN: _check_oauth2,
           GITHUB_APP: _check_github, GOOGLE_SERVICE_ACCOUNT: _check_google,
           MTLS_CLIENT_CERT: _check_mtls}
