"""The vault's tables: one row per secret (its current version, last use and, for a secret a
provider mints, the provider's kind and state) and one per version (the sealed value and its
wrapped data key)."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlmodel import Field, SQLModel


class SecretRecord(SQLModel, table=True):
    """One row per secret: its current version and when it was last used."""

    __tablename__ = "secret"

    name: str = Field(primary_key=True)
    version: int
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    updated_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    last_used_at: datetime | None = None
    # a provider secret (vault.providers): its kind, and what the gateway last saw of it
    provider: str | None = None
    refreshed_at: datetime | None = None    # the last value minted
    expires_at: datetime | None = None      # when that value (or the certificate) expires
    error: str | None = None                # the last failure, never holding a value
    error_at: datetime | None = None
    # Kubernetes namespaces whose pods may bind it (sandgate.dev/secrets), comma-separated;
    # none: no pod may (a pod's creator must not take another team's secret)
    kubernetes_namespaces: str | None = None


class SecretVersion(SQLModel, table=True):
    """One row per version: the sealed value and its wrapped data key."""

    __tablename__ = "secret_version"

    name: str = Field(primary_key=True)
    version: int = Field(primary_key=True)
    wrapped_key: bytes
    ciphertext: bytes
    master_key_id: str
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
