"""Secrets through the control plane: values go in, never out; every change is told to the
proxy workers, which reopen their vault."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

from gateway.errors import BadRequest, NotFound
from policies.schema import SECRET_NAME
from vault import providers
from vault.crypto import KeySource, VaultError
from vault.keyring import rotate_master_key
from vault.providers import ProviderError
from vault.store import Vault


def check_name(name: str) -> None:
    if not re.match(SECRET_NAME, name):
        raise BadRequest(f"invalid secret name {name!r}",
                         "names are letters, digits and '_', not starting with a digit")


class Secrets:
    def __init__(self, vault: Vault, key_source: KeySource) -> None:
        self.vault = vault
        self.key_source = key_source
        self.changed: Callable[[], None] = lambda: None   # tells the proxy workers

    def exists(self, name: str) -> bool:
        return bool(re.match(SECRET_NAME, name)) and self.vault.exists(name)

    def put(self, name: str, value: str) -> int:
        check_name(name)
        try:
            version = self.vault.put(name, value)
        except VaultError as e:
            raise BadRequest(str(e)) from e
        self.changed()
        return version

    def put_provider(self, name: str, kind: str, fields: dict[str, str]) -> int:
        """A secret a provider mints (or, for mtls_client_cert, presents): its
        configuration, checked, sealed like any value."""
        check_name(name)
        try:
            version = providers.store(self.vault, name, providers.parse(kind, fields))
        except (ProviderError, VaultError) as e:
            raise BadRequest(str(e), "see docs/POLICY.md, Credentials a provider mints") \
                from e
        self.changed()
        return version

    def list(self) -> list[dict[str, Any]]:
        """Metadata only; for a provider secret its state: last refresh, expiry of what it
        holds, last error (never a value)."""
        return [{"name": i.name, "version": i.version, "created_at": i.created_at,
                 "updated_at": i.updated_at, "last_used_at": i.last_used_at,
                 "provider": i.provider, "refreshed_at": i.refreshed_at,
                 "expires_at": i.expires_at, "error": i.error, "error_at": i.error_at,
                 "kubernetes_namespaces": list(i.kubernetes_namespaces)}
                for i in self.vault.list()]

    def set_namespaces(self, name: str, namespaces: Sequence[str]) -> tuple[str, ...]:
        """Which Kubernetes namespaces' pods may bind the secret (sandgate.dev/secrets)."""
        check_name(name)
        if not self.vault.set_namespaces(name, namespaces):
            raise NotFound(f"no secret named {name!r}")
        return tuple(sorted(set(namespaces)))

    def namespaces(self, name: str) -> frozenset[str]:
        return self.vault.namespaces(name) if self.exists(name) else frozenset()

    def delete(self, name: str) -> None:
        check_name(name)
        if not self.vault.delete(name):
            raise NotFound(f"no secret named {name!r}")
        self.changed()

    def rotate_master_key(self) -> tuple[str, int]:
        try:
            rotated = rotate_master_key(self.vault, self.key_source)
        except VaultError as e:
            raise BadRequest(str(e)) from e
        self.changed()
        return rotated
