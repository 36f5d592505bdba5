"""Settings: environment variables `SANDGATE_*`, overridden by CLI flags. Built by whoever
starts a process (CLI, tests), never at import."""

from __future__ import annotations

import ipaddress
import os
import secrets
import socket
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from gateway.home import default_cache_dir, default_home
from sandbox_net.firewall import FirewallSpec
from sandbox_net.images.store import IMAGE_NAME
from sandbox_net.names import Naming
from vault.crypto import KeySource


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SANDGATE_", extra="ignore")

    home: Path = Field(default_factory=default_home, description="data directory")
    # what is fetched or built from the distribution's packages and shared by every data dir
    # on the host (the microVM kernel): filled by scripts/bootstrap.sh at set-up time
    cache_dir: Path = Field(default_factory=lambda: default_cache_dir())
    # the policy store: where the API writes policies and hot reload watches; default
    # HOME/policies. The policies packaged with sandgate are read-only defaults behind it.
    policy_dir: Path = Path()
    database_url: str | None = None
    name_prefix: str = "sg"
    api_host: str = "127.0.0.1"
    api_port: int = 8700
    transparent_port: int = 15001
    dns_port: int = 15053
    upstream_resolver: str | None = None
    upstream_ca: Path | None = None
    runsc_platform: str = "ptrace"
    master_key: str | None = Field(default=None, repr=False)  # base64; else the key file
    master_key_file: Path | None = None
    quarantine_on_exfil: bool = True
    audit_signing_key_file: Path | None = None
    # chain heads outside the database (docs/AUDIT.md); default: audit-heads.jsonl in `home`
    audit_heads_file: Path | None = None
    audit_retain_days: int | None = Field(default=None, ge=1)
    otlp_endpoint: str | None = None
    firewall_check_interval: float = Field(default=0.5, ge=0)  # 0: no watchdog
    synthetic_ttl: int = 60
    # gVisor sandboxes started ahead, per image of warm_images, for create calls with the
    # default limits and user
    warm_pool: int = Field(default=0, ge=0, le=64)
    warm_images: str = "base"   # comma-separated image names
    # TCP proxy processes (the main process serves DNS, the API, the audit log). Default: one
    # per core.
    workers: int = Field(default_factory=lambda: os.cpu_count() or 1, ge=1, le=64)
    # `sandgate api` on SQLite (a single host trying the central API; a cluster shares PostgreSQL)
    allow_sqlite: bool = False
    # microVM acceleration: KVM only when asked for (it hangs under nested virtualisation)
    microvm_accel: Literal["tcg", "kvm"] = "tcg"
    # approvals (an `ask` rule): how long a request is held before it is denied; the webhook
    # told of each pending one (HMAC-signed with the secret); the API's address people reach,
    # for the decision URLs it carries (default: http://API_HOST:API_PORT)
    approval_timeout: float = Field(default=60.0, gt=0, le=3600)
    approval_webhook_url: str | None = None
    approval_webhook_secret: str | None = Field(default=None, repr=False)
    approval_public_url: str | None = None
    # a clean stop destroys every sandbox (`make up`); otherwise they keep running, their
    # egress refused, until the next start adopts them (docs/SERVICE.md: Restarts)
    destroy_on_stop: bool = False

    @model_validator(mode="before")
    @classmethod
    def _policy_store(cls, data: Any) -> Any:
        if isinstance(data, dict) and not data.get("policy_dir"):
            home = data.get("home") or default_home()
            data = {**data, "policy_dir": Path(str(home)).expanduser() / "policies"}
        return data

    @field_validator("home", "cache_dir", "policy_dir", "upstream_ca", "master_key_file",
                     "audit_signing_key_file", "audit_heads_file")
    @classmethod
    def _absolute(cls, value: Path | None) -> Path | None:
        return value.expanduser().resolve() if value is not None else None

    @field_validator("warm_images")
    @classmethod
    def _warm_images(cls, value: str) -> str:
        names = [name.strip() for name in value.split(",") if name.strip()]
        bad = [name for name in names if not IMAGE_NAME.match(name)]
        if bad:
            raise ValueError(f"warm image name {bad[0]!r} is not an image name")
        return ",".join(names)

    @field_validator("upstream_resolver")
    @classmethod
    def _resolver(cls, value: str | None) -> str | None:
        if value in (None, ""):
            return None
        try:
            return str(ipaddress.ip_address(value))
        except ValueError:
            raise ValueError(f"upstream resolver {value!r} is not an IP address") from None

    @field_validator("name_prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        Naming(value)  # raises ValueError with the rule
        return value

    @field_validator("transparent_port", "dns_port", "api_port")
    @classmethod
    def _port(cls, value: int) -> int:
        if not 1 <= value <= 65535:
            raise ValueError(f"port {value} is out of range 1-65535")
        return value

    @model_validator(mode="after")
    def _worker_ports(self) -> Settings:
        last = self.transparent_port + self.workers - 1
        if last > 65535:
            raise ValueError(f"{self.workers} workers need transparent ports "
                             f"{self.transparent_port}-{last}, beyond 65535")
        if self.transparent_port <= self.dns_port <= last:
            raise ValueError(f"the DNS port {self.dns_port} is one of the workers' transparent "
                             f"ports {self.transparent_port}-{last}")
        return self

    @model_validator(mode="after")
    def _webhook_signed(self) -> Settings:
        if self.approval_webhook_url and not self.approval_webhook_secret:
            raise ValueError("SANDGATE_APPROVAL_WEBHOOK_URL needs "
                             "SANDGATE_APPROVAL_WEBHOOK_SECRET: its messages are signed")
        return self

    # derived paths and objects
    @property
    def naming(self) -> Naming:
        return Naming(self.name_prefix)

    @property
    def firewall(self) -> FirewallSpec:
        return FirewallSpec(self.naming.table, self.naming.link_glob,
                            self.transparent_port, self.dns_port, self.workers)

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.home / 'sandgate.db'}"

    @property
    def ca_dir(self) -> Path:
        return self.home / "ca"

    @property
    def control_socket(self) -> Path:
        return self.home / "control.sock"

    @property
    def hub_socket(self) -> Path:
        """Where proxy workers reach the main process (gateway.processes.hub)."""
        return self.home / "hub.sock"

    @property
    def sandboxes_dir(self) -> Path:
        return self.home / "sandboxes"

    @property
    def warm_image_names(self) -> list[str]:
        return [name for name in self.warm_images.split(",") if name]

    @property
    def images_dir(self) -> Path:
        """Sandbox images (sandbox_net.images.store), shared by every data dir on the host."""
        return self.cache_dir / "images"

    @property
    def runsc_dir(self) -> Path:
        return self.home / "runsc"

    @property
    def spool_file(self) -> Path:
        return self.home / "audit-spool.jsonl"

    @property
    def heads_file(self) -> Path:
        return self.audit_heads_file or self.home / "audit-heads.jsonl"

    @property
    def gateway_id_file(self) -> Path:
        return self.home / "gateway.id"

    @property
    def gateway_id(self) -> str:
        """This data dir's gateway identity, the name of its audit hash chain (created by
        `create_gateway_id` when a gateway first starts on the data dir)."""
        return self.gateway_id_file.read_text().strip()

    def create_gateway_id(self) -> str:
        """The gateway identity, created on first use."""
        if not self.gateway_id_file.exists():
            self.home.mkdir(parents=True, exist_ok=True)
            self.gateway_id_file.write_text(secrets.token_hex(6) + "\n")
        return self.gateway_id

    @property
    def host_id(self) -> str:
        """This machine, for address slots (gateways on one host share their slot space)."""
        try:
            return Path("/etc/machine-id").read_text().strip() or socket.gethostname()
        except OSError:
            return socket.gethostname()

    @property
    def lock_file(self) -> Path:
        return self.home / "gateway.lock"

    @property
    def key_source(self) -> KeySource:
        if self.master_key:
            return KeySource(text=self.master_key)
        return KeySource(path=self.master_key_file or self.home / "master.key")

    def as_env(self) -> dict[str, str]:
        """These settings as SANDGATE_* variables, for a child process."""
        values: dict[str, Any] = self.model_dump(exclude_none=True)
        return {f"SANDGATE_{k.upper()}": str(v) for k, v in values.items()}
