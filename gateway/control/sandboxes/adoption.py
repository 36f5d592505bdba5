"""What a restarted gateway needs to take a running sandbox back, and whether it may.

A sandbox outlives the gateway process (its runsc or QEMU processes, namespace, link, pin
and slot stay), but the gateway's knowledge of it lived in memory: the placeholders it was
given, its environment, its runtime's spec. `save` keeps them in the sandbox's own work
directory (host-only: the data dir is 0700, the file 0600); placeholders are no secrets (they
are worthless outside the gateway), but the bindings must be the ones the sandbox holds.

`obstacle` is the decision, free of I/O: a sandbox is adopted only when its record says it
runs, its time is not up and what the gateway saved is there; the network and the runtime
are asked afterwards (HostNetwork.adopt, Runtime.alive), and each says why not.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gateway.control.models import SandboxRecord
from sandbox_net.runtime.base import FileMount, RootImage, SandboxSpec

STATE_FILE = "sandbox.json"


@dataclass(frozen=True, slots=True)
class Saved:
    """A sandbox's spec (less what the slot and names give back) and its placeholders."""

    runtime: str
    spec: SandboxSpec
    secrets: dict[str, str]          # secret name -> the placeholder the sandbox holds


def save(saved: Saved) -> None:
    """Write the state file atomically, readable by root alone."""
    spec = saved.spec
    data = {
        "runtime": saved.runtime, "secrets": saved.secrets,
        "spec": {**{f.name: getattr(spec, f.name) for f in dataclasses.fields(spec)
                    if f.name not in ("workdir", "root", "files")},
                 "root": dataclasses.asdict(spec.root) if spec.root else None,
                 "files": [[str(f.source), f.target] for f in spec.files]},
    }
    path = spec.workdir / STATE_FILE
    temporary = path.with_suffix(".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(data, handle, default=str)
    temporary.replace(path)


def load(workdir: Path) -> Saved | None:
    """The saved state, or None when it is missing or unreadable."""
    try:
        data = json.loads((workdir / STATE_FILE).read_text())
        fields: dict[str, Any] = dict(data["spec"])
        root = fields.pop("root")
        files = tuple(FileMount(Path(source), target) for source, target in fields.pop("files"))
        spec = SandboxSpec(**fields, workdir=workdir, files=files, root=RootImage(
            root["id"], Path(root["rootfs"]), Path(root["disk"])) if root else None)
        return Saved(str(data["runtime"]), spec, {str(k): str(v)
                                                  for k, v in data["secrets"].items()})
    except (OSError, ValueError, KeyError, TypeError):
        return None


def aware(moment: datetime) -> datetime:
    """SQLite gives stored datetimes back without their zone; they were UTC."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def expiry(record: SandboxRecord) -> float:
    """The time.time() at which the sandbox's time to live runs out."""
    return aware(record.expires_at).timestamp() if record.expires_at else float("inf")


def last_active(record: SandboxRecord) -> float:
    """The time.time() of the sandbox's last activity an earlier run wrote (its idle timer
    resumes from there)."""
    return aware(record.last_active_at).timestamp() if record.last_active_at else time.time()


def obstacle(sandbox_id: str, record: SandboxRecord | None, saved: Saved | None,
             now: datetime) -> str | None:
    """Why the sandbox cannot be adopted from what is recorded (None: ask the network and
    the runtime next)."""
    if record is None:
        return "no record of it (left by an interrupted create or another data dir)"
    if record.state != "running":
        return f"it was {record.state} when the gateway stopped"
    if record.expires_at is None:
        return "its record has no time to live"
    if aware(record.expires_at) <= now:
        return "its time to live ran out while the gateway was down"
    if record.idle_timeout_seconds is not None and \
            last_active(record) + record.idle_timeout_seconds < now.timestamp():
        return "its idle timeout ran out while the gateway was down"
    if saved is None:
        return f"its saved state ({STATE_FILE}) is missing or unreadable"
    if saved.runtime != record.runtime:
        return f"its saved state names runtime {saved.runtime}, its record {record.runtime}"
    if saved.spec.sandbox_id != sandbox_id or saved.spec.ip != record.ip:
        return "its saved state does not match its record"
    if saved.spec.root is None or saved.spec.root.id != record.image_id:
        return "its saved state names another image than its record"
    return None


def audit_row(sandbox_id: str, record: SandboxRecord | None, why: str | None) -> dict[str, Any]:
    """The audit row of a start-up's decision: adopted, or destroyed and why."""
    return {"sandbox_id": sandbox_id, "owner": record.owner if record else None,
            "policy": record.policy if record else None,
            "decision": "allow" if why is None else "deny",
            "reason": "sandbox_adopted" if why is None else "sandbox_reconciled",
            "protocol": "sandbox", "error": why}
