"""The sandbox API's models: Create in, Public out (Public never carries secrets)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from policies.schema import SECRET_NAME

RuntimeName = Literal["gvisor", "microvm"]
IMAGE_NAME = r"^[a-z0-9][a-z0-9._-]{0,62}$"
USER_SPEC = r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,31}(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,31})?$"


class SandboxCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    runtime: RuntimeName = "gvisor"
    image: str = Field(default="base", pattern=IMAGE_NAME,
                       description="the sandbox's root filesystem (GET /v1/images)")
    user: str | None = Field(
        default=None, pattern=USER_SPEC,
        description="who commands run as: NAME, UID, NAME:GROUP or UID:GID in the image; "
                    "default the image's own non-root user, else uid 1000; 'root' only "
                    "when asked for")
    policy: str = Field(min_length=1, description="policy name, or a policy file path "
                                                   "(local control socket only)")
    env: dict[str, str] = Field(default_factory=dict)
    secrets: list[Annotated[str, Field(pattern=SECRET_NAME)]] = Field(
        default_factory=list, description="names of vault secrets; the sandbox gets a "
                                          "placeholder for each in its environment")
    ttl_seconds: int = Field(default=3600, ge=1, le=7 * 86400,
                             description="hard wall-clock limit; then it is killed and removed")
    idle_timeout_seconds: int | None = Field(
        default=None, ge=1, le=7 * 86400,
        description="removed after this long without exec calls or network traffic")
    memory_mb: int = Field(default=512, ge=64, le=65536)
    cpus: float = Field(default=1.0, gt=0, le=64)
    max_pids: int = Field(default=256, ge=8, le=65536)
    disk_mb: int = Field(default=512, ge=16, le=65536,
                         description="size of each writable tmpfs, /tmp and /workspace "
                                     "(counted against memory)")


class SandboxPublic(BaseModel):
    id: str
    runtime: str
    image: str | None = None
    user: str | None = None      # uid:gid
    policy: str
    state: str
    owner: str | None = None
    expires_at: datetime | None = None
    memory_mb: int | None = None
    cpus: float | None = None
    max_pids: int | None = None
    disk_mb: int | None = None
    end_reason: str | None = None
    ip: str | None
    netns: str | None = None
    created_at: datetime
    deleted_at: datetime | None = None
    quarantined_at: datetime | None = None   # its first secret-exfiltration attempt
    quarantine_reason: str | None = None


CWD = Field(default=None, description="working directory; default the image's WorkingDir, "
                                     "else /workspace")


class LocalExec(BaseModel):
    """Ask for the host command that runs `cmd` in a sandbox (local root clients only)."""

    model_config = ConfigDict(extra="forbid")

    cmd: list[str] = Field(min_length=1)
    env: dict[str, str] = Field(default_factory=dict)
    cwd: str | None = CWD


class ExecRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    cmd: list[str] = Field(min_length=1, description="argv; not run through a shell")
    stdin: str | None = Field(default=None, max_length=16 * 1024 * 1024)
    cwd: str | None = CWD
    env: dict[str, str] = Field(default_factory=dict)
    timeout_seconds: float = Field(default=60, gt=0, le=3600)


class ExecResult(BaseModel):
    exit_code: int
    stdout: str
    stderr: str
    timed_out: bool = False


class FileUpload(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str = Field(min_length=1, max_length=4096)
    content_base64: str = Field(max_length=90 * 1024 * 1024)
