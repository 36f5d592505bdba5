"""Where the credentials addon gets the value it injects: the one seam between the data plane
and the two kinds of secret. A stored secret's value comes from the vault; a provider
secret's (vault.providers) is the value the main process's broker minted for all workers
(gateway.providers.broker), asked for through the coordinator and kept here until it is no
longer fresh. Either way the addon gets a SecretValue and treats it alike: every form, the
tripwire and scrubbing work unchanged. An mTLS client certificate is no value: it is handed
to the TLS handshake (gateway.dataplane.addons.client_cert).

Failures are CredentialError: the reason the sandbox is told (502 credential_unavailable for
a provider that gave nothing) and a message that never holds a value.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gateway.dataplane.coordinator import Coordinator, Credential
from policies.decision import Reason
from policies.schema import Inject, InjectSigV4
from vault import providers
from vault.crypto import VaultError
from vault.providers import ProviderError
from vault.secret import SecretValue
from vault.store import Vault

type TokenKey = tuple[str, str, str]    # secret, generation, narrowing


class CredentialError(Exception):
    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class ClientIdentity:
    """An mTLS client certificate chain (leaf first) and its key, as cryptography objects."""

    name: str
    generation: str
    chain: list[Any]
    key: Any

    def __repr__(self) -> str:
        return f"ClientIdentity({self.name}@{self.generation})"


def _narrow_key(spec: Inject) -> str:
    return spec.narrow.model_dump_json() if spec.narrow is not None else ""


class Values:
    def __init__(self, vault: Callable[[], Vault | None], coord: Coordinator) -> None:
        self._vault = vault
        self.coord = coord
        self._tokens: dict[TokenKey, Credential] = {}
        self._asking: dict[TokenKey, asyncio.Future[Credential]] = {}
        self._identities: dict[str, ClientIdentity] = {}

    def _open(self) -> Vault:
        vault = self._vault()
        if vault is None:
            raise CredentialError(Reason.INTERNAL_ERROR, "the gateway has no vault")
        return vault

    async def value(self, spec: Inject, sandbox_id: str) -> SecretValue:
        """The value `spec`'s secret injects now."""
        name = spec.secret
        vault = self._open()
        try:
            current = vault.current(name)
            if current is None:
                raise VaultError(f"no secret named {name!r}")
            if current.provider is None:
                if spec.narrow is not None:
                    raise CredentialError(Reason.CREDENTIAL_UNAVAILABLE,
                                          f"secret {name} is a stored value: `narrow` applies "
                                          "to secrets a provider mints")
                return vault.reveal(name)
        except VaultError as e:
            raise CredentialError(Reason.INTERNAL_ERROR, f"vault: {e}") from None
        if current.provider == providers.MTLS_CLIENT_CERT:
            raise CredentialError(Reason.CREDENTIAL_UNAVAILABLE,
                                  f"secret {name} is a client certificate: inject it "
                                  "`as: mtls`")
        if isinstance(spec, InjectSigV4):
            raise CredentialError(Reason.CREDENTIAL_UNAVAILABLE,
                                  f"secret {name} is minted by a provider: aws-sigv4 signs "
                                  "with stored keys only")
        credential = await self._credential((name, current.generation, _narrow_key(spec)),
                                            spec, sandbox_id)
        if credential.value is None:
            raise CredentialError(Reason.CREDENTIAL_UNAVAILABLE,
                                  credential.error or f"secret {name}: no value")
        return credential.value

    async def _credential(self, key: TokenKey, spec: Inject, sandbox_id: str) -> Credential:
        """This worker's copy of the broker's answer while it is fresh; one question at a
        time per key, however many requests wait for it."""
        now = time.time()
        known = self._tokens.get(key)
        if known is not None and now < known.fresh_until:
            return known
        asking = self._asking.get(key)
        if asking is None:
            asking = asyncio.ensure_future(
                self.coord.credential(key[0], key[1], spec.narrow, sandbox_id))
            self._asking[key] = asking
            asking.add_done_callback(lambda _done: self._asking.pop(key, None))
        credential = await asyncio.shield(asking)
        self._tokens = {k: c for k, c in self._tokens.items() if now < c.fresh_until}
        self._tokens[key] = credential
        return credential

    def client_identity(self, name: str) -> ClientIdentity:
        """The client certificate an `as: mtls` injection presents."""
        vault = self._open()
        try:
            current = vault.current(name)
            if current is None or current.provider != providers.MTLS_CLIENT_CERT:
                raise CredentialError(Reason.CREDENTIAL_UNAVAILABLE,
                                      f"secret {name} is not an mtls_client_cert provider: "
                                      "`as: mtls` presents a client certificate")
            known = self._identities.get(name)
            if known is not None and known.generation == current.generation:
                return known
            current, sealed = vault.reveal_provider(name)
            chain, key = providers.identity_parts(providers.from_text(sealed.reveal()))
        except (VaultError, ProviderError) as e:
            raise CredentialError(Reason.CREDENTIAL_UNAVAILABLE, f"secret {name}: {e}") \
                from None
        identity = ClientIdentity(name, current.generation, chain, key)
        self._identities[name] = identity
        return identity
