"""The control plane's tables: sandboxes (so a restarted service knows what it runs), API
tokens (hashes only), and the policy documents gateways share through the database."""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Field, SQLModel

from gateway.clock import utcnow


class SandboxRecord(SQLModel, table=True):
    __tablename__ = "sandbox"

    id: str = Field(primary_key=True)
    runtime: str
    image: str | None = None                # image name, and the content it stood for
    image_id: str | None = None
    run_as: str | None = None               # uid:gid of its commands
    policy: str
    policy_source: str
    state: str = Field(index=True)          # creating | running | deleted
    owner: str | None = None
    gateway_id: str | None = Field(default=None, index=True)   # the gateway running it
    ip: str | None = None
    ttl_seconds: int | None = None
    expires_at: datetime | None = None
    idle_timeout_seconds: int | None = None
    last_active_at: datetime | None = None
    memory_mb: int | None = None
    cpus: float | None = None
    max_pids: int | None = None
    disk_mb: int | None = None
    pod: str | None = None                  # namespace/name of a pod wired by sandgate-cni
    pod_uid: str | None = None
    container_id: str | None = Field(default=None, index=True)   # the pod's, from its runtime
    end_reason: str | None = None           # deleted | expired | idle | gateway-stopped ...
    # set once, at the trip (a secret-exfiltration attempt): a restart keeps the quarantine
    quarantined_at: datetime | None = None
    quarantine_reason: str | None = None
    created_at: datetime = Field(default_factory=utcnow)
    deleted_at: datetime | None = None


class ApiToken(SQLModel, table=True):
    __tablename__ = "api_token"

    id: str = Field(primary_key=True)
    name: str
    role: str
    secret_hash: str
    created_at: datetime = Field(default_factory=utcnow)
    last_used_at: datetime | None = None
    revoked: bool = False


class PolicyDocument(SQLModel, table=True):
    __tablename__ = "policy_document"

    name: str = Field(primary_key=True)
    yaml: str | None = None          # None: deleted
    revision: int = Field(unique=True, index=True)
    gateway_id: str
    updated_at: datetime = Field(default_factory=utcnow)
