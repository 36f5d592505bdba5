"""Sandbox lifecycle: the order of steps is the security property.

create:  record -> slot -> firewall verified -> namespace + link (down) -> firewall verified
         -> link up -> registered with the gateway -> runtime started
delete:  runtime stopped -> unregistered -> link and namespace removed -> slot released
Any failure while creating undoes every step taken.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import ipaddress
import logging
import re
import shutil
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import Session, or_, select

from gateway.audit.writer import AuditWriter
from gateway.control.models import SandboxRecord
from gateway.control.policy_store import PolicyHandle, PolicyStore
from gateway.control.schemas import (
    ExecRequest,
    ExecResult,
    FileUpload,
    SandboxCreate,
    SandboxPublic,
)
from gateway.dataplane.registry import Registry, SandboxContext, SyntheticPool
from gateway.errors import BadRequest, NotFound, NotReady
from gateway.settings import Settings
from policies.schema import SECRET_NAME
from sandbox_net import cgroups, firewall, links, slots
from sandbox_net.errors import FirewallError, NetError, RuntimeFailure
from sandbox_net.names import new_sandbox_id
from sandbox_net.runtime.base import FileMount, Runtime, SandboxSpec, bounded, run_exec
from vault.crypto import VaultError
from vault.keyring import rotate_master_key
from vault.placeholders import new_placeholder
from vault.store import Vault

logger = logging.getLogger(__name__)

SYSTEM_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
WARM_LIMITS = ("memory_mb", "cpus", "max_pids")   # a warm sandbox has the default ones
CA_ENV = ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "NODE_EXTRA_CA_CERTS")
# Host paths a sandbox must not read through its read-only view of the host's root:
# credentials, keys, other users' data, and runtime state (the data dir is added too).
MASKED_DIRS = ("/root", "/home", "/etc/ssh", "/var/lib", "/var/backups", "/run", "/srv")
MASKED_FILES = ("/etc/shadow", "/etc/gshadow", "/etc/sudoers")


@dataclass(frozen=True, slots=True)
class _Prepared:
    """A sandbox's network and spec, before the gateway knows it."""

    spec: SandboxSpec
    synthetic: ipaddress.IPv4Network


@dataclass(frozen=True, slots=True)
class _Deadline:
    expires: float              # time.time() of the hard limit
    idle: int | None            # seconds without activity allowed


class SandboxService:
    def __init__(self, settings: Settings, engine: Engine, registry: Registry,
                 runtimes: dict[str, Runtime], policies: PolicyStore, audit: AuditWriter,
                 ca_bundle: Path, open_connections: Callable[[str], int] = lambda _id: 0,
                 vault: Vault | None = None) -> None:
        self.settings = settings
        self.gateway_id = settings.gateway_id
        self.engine = engine
        self.registry = registry
        self.runtimes = runtimes
        self._runtime_of: dict[str, str] = {}
        self.policies = policies
        self.audit = audit
        self.ca_bundle = ca_bundle
        self.open_connections = open_connections
        self.vault = vault
        self.after_vault_change: Callable[[], None] = lambda: None   # tell proxy workers
        self._lock = threading.Lock()
        self._specs: dict[str, SandboxSpec] = {}
        self._deadlines: dict[str, _Deadline] = {}
        self._warm: list[_Prepared] = []
        self._stopping = False

    # create
    def create(self, request: SandboxCreate, owner: str = "local") -> SandboxPublic:
        runtime = self.runtimes.get(request.runtime)
        if runtime is None:
            raise BadRequest(f"runtime {request.runtime!r} is not available here",
                             f"use one of: {', '.join(sorted(self.runtimes))}")
        try:
            runtime.preflight()
        except RuntimeFailure as e:
            raise NotReady(str(e)) from e
        handle = self.policies.acquire(request.policy)
        for key in request.env:
            if not key or "=" in key or "\0" in key:
                raise BadRequest(f"invalid environment variable name {key!r}")
        self._check_secrets(request.secrets)
        warm = self._claim_warm(request)
        sandbox_id = warm.spec.sandbox_id if warm else new_sandbox_id()
        now = datetime.now(UTC)
        record = SandboxRecord(
            id=sandbox_id, runtime=request.runtime, policy=handle.policy.name,
            policy_source=str(handle.path), state="creating", owner=owner,
            gateway_id=self.gateway_id,
            ttl_seconds=request.ttl_seconds,
            expires_at=now + timedelta(seconds=request.ttl_seconds),
            idle_timeout_seconds=request.idle_timeout_seconds, last_active_at=now,
            memory_mb=request.memory_mb, cpus=request.cpus, max_pids=request.max_pids)
        self._save(record)
        try:
            spec = (self._adopt(warm, request, handle, record) if warm
                    else self._build(sandbox_id, request, handle, record))
        except BaseException:
            self._destroy(sandbox_id)
            raise
        self._specs[sandbox_id] = spec
        # The time to live counts from the request, boot included (the record says so too).
        assert record.expires_at is not None
        self._deadlines[sandbox_id] = _Deadline(record.expires_at.timestamp(),
                                                request.idle_timeout_seconds)
        record.state = "running"
        self._save(record)
        return self._public(record)

    def _build(self, sandbox_id: str, request: SandboxCreate, handle: PolicyHandle,
               record: SandboxRecord) -> SandboxSpec:
        prepared = self._prepare(sandbox_id, request.memory_mb, request.cpus, request.max_pids)
        record.ip = prepared.spec.ip
        spec = self._register(prepared, request, handle, record)
        self._start(spec, request.runtime)
        return spec

    def _prepare(self, sandbox_id: str, memory_mb: int, cpus: float,
                 max_pids: int) -> _Prepared:
        """The sandbox's network (up only once its rules are verified) and spec."""
        naming, fw = self.settings.naming, self.settings.firewall
        try:
            addresses = slots.allocate(self.engine, sandbox_id, self.gateway_id,
                                       self.settings.host_id)
            firewall.verify(fw)
            link = links.create(naming, sandbox_id, addresses)
            # fail closed: the host forwards packets, so the link comes up only once the
            # drop and redirect rules are verified in the kernel.
            firewall.verify(fw)
            links.bring_up(link)
        except FirewallError as e:
            raise NotReady(f"egress rules are not in place: {e}",
                           "restart the gateway (sandgate serve) to reinstall them") from e
        except NetError as e:
            raise NotReady(f"sandbox network setup failed: {e}") from e
        workdir = self.settings.sandboxes_dir / sandbox_id
        workdir.mkdir(parents=True, exist_ok=True, mode=0o700)
        return _Prepared(SandboxSpec(
            sandbox_id=sandbox_id,
            netns_path=link.netns_path,
            workdir=workdir,
            env={k: "/etc/ssl/certs/ca-certificates.crt" for k in CA_ENV},
            files=self._files(workdir, str(addresses.host_ip)),
            masked_dirs=self._masked_dirs(),
            memory_mb=memory_mb, max_pids=max_pids, cpus=cpus,
            ip=str(addresses.sandbox_ip), gateway_ip=str(addresses.host_ip),
        ), addresses.synthetic)

    def _register(self, prepared: _Prepared, request: SandboxCreate, handle: PolicyHandle,
                  record: SandboxRecord) -> SandboxSpec:
        """The gateway learns the sandbox: from here its egress is decided by its policy."""
        # The sandbox gets a fresh placeholder per secret, never the value.
        secrets = {name: new_placeholder() for name in request.secrets}
        spec = dataclasses.replace(prepared.spec,
                                   env={**prepared.spec.env, **request.env, **secrets})
        self.registry.add(SandboxContext(
            id=spec.sandbox_id, ip=spec.ip, handle=handle,
            pool=SyntheticPool(prepared.synthetic), env=spec.env,
            secrets=secrets, owner=record.owner))
        return spec

    def _start(self, spec: SandboxSpec, runtime: str) -> None:
        try:
            self._runtime_of[spec.sandbox_id] = runtime
            self.runtimes[runtime].start(spec)
        except RuntimeFailure as e:
            raise NotReady(str(e)) from e

    # warm pool: gVisor sandboxes started ahead, not registered (so refused any egress)
    # until a create call with the default limits claims one
    def _claim_warm(self, request: SandboxCreate) -> _Prepared | None:
        defaults = SandboxCreate.model_fields
        if request.runtime != "gvisor" or any(
                getattr(request, f) != defaults[f].default for f in WARM_LIMITS):
            return None
        with self._lock:
            return self._warm.pop(0) if self._warm else None

    def _adopt(self, warm: _Prepared, request: SandboxCreate, handle: PolicyHandle,
               record: SandboxRecord) -> SandboxSpec:
        record.ip = warm.spec.ip
        return self._register(warm, request, handle, record)

    def warm_count(self) -> int:
        return len(self._warm)

    def keep_warm(self) -> None:
        """Start gVisor sandboxes until `warm_pool` wait unclaimed (from a background loop)."""
        defaults = SandboxCreate.model_fields
        while not self._stopping and len(self._warm) < self.settings.warm_pool:
            sandbox_id = new_sandbox_id()
            try:
                prepared = self._prepare(sandbox_id,
                                         *(defaults[f].default for f in WARM_LIMITS))
                self._start(prepared.spec, "gvisor")
            except BaseException:
                self._destroy(sandbox_id, "warm-pool-failed")
                raise
            with self._lock:
                if not self._stopping:
                    self._warm.append(prepared)
                    continue
            self._destroy(sandbox_id, "gateway-stopped")   # shut-down began meanwhile

    def _files(self, workdir: Path, nameserver: str) -> tuple[FileMount, ...]:
        resolv = workdir / "resolv.conf"
        resolv.write_text(f"nameserver {nameserver}\noptions attempts:2 timeout:2\n")
        hosts = workdir / "hosts"
        hosts.write_text("127.0.0.1\tlocalhost\n")
        empty = workdir / "empty"
        empty.write_text("")
        mounts = [FileMount(resolv, "/etc/resolv.conf"), FileMount(hosts, "/etc/hosts"),
                  FileMount(self.ca_bundle, str(SYSTEM_BUNDLE))]
        mounts += [FileMount(empty, f) for f in MASKED_FILES if Path(f).exists()]
        return tuple(mounts)

    def _check_secrets(self, names: list[str]) -> None:
        for name in names:
            self._check_name(name)
            if self.vault is None or not self.vault.exists(name):
                raise BadRequest(f"no secret named {name!r}",
                                 f"set it first: sandgate secret set {name}")

    def rotate_master_key(self) -> tuple[str, int]:
        if self.vault is None:
            raise NotReady("the vault is not open")
        try:
            rotated = rotate_master_key(self.vault, self.settings.key_source)
        except VaultError as e:
            raise BadRequest(str(e)) from e
        self.after_vault_change()
        return rotated

    def _masked_dirs(self) -> tuple[str, ...]:
        candidates = {Path(d) for d in (*MASKED_DIRS, str(self.settings.home))}
        # /tmp is the sandbox's own tmpfs already; paths below it do not exist there, nor do
        # paths below another masked directory.
        kept = [d for d in candidates if d.is_dir() and not d.is_relative_to("/tmp")
                and not any(d != o and d.is_relative_to(o) for o in candidates)]
        return tuple(sorted(str(d) for d in kept))

    # delete
    def delete(self, sandbox_id: str) -> None:
        if self._record(sandbox_id) is None:
            raise NotFound(f"no sandbox {sandbox_id}")
        self._destroy(sandbox_id, "deleted")

    def reap(self) -> list[str]:
        """Kill and remove sandboxes past their time to live or idle timeout."""
        now = time.time()
        ended = []
        for sandbox_id, deadline in list(self._deadlines.items()):
            context = self.registry.by_id(sandbox_id)
            idle = context is not None and deadline.idle is not None and \
                now - context.last_active > deadline.idle
            if now >= deadline.expires or idle:
                reason = "expired" if now >= deadline.expires else "idle"
                logger.info("sandbox %s %s; removing it", sandbox_id, reason)
                self._destroy(sandbox_id, reason)
                ended.append(sandbox_id)
        return ended

    def touch(self, sandbox_id: str) -> None:
        context = self.registry.by_id(sandbox_id)
        if context is not None:
            context.last_active = time.time()

    def _destroy(self, sandbox_id: str, reason: str = "deleted") -> None:
        with self._lock:
            self._deadlines.pop(sandbox_id, None)
            spec = self._specs.pop(sandbox_id, None) or self._spec_guess(sandbox_id)
            name = self._runtime_of.pop(sandbox_id, None)
            # A sandbox left by a crash may be of either kind: every runtime's stop is
            # idempotent, so all are asked.
            for runtime in [self.runtimes[name]] if name else list(self.runtimes.values()):
                try:
                    runtime.stop(spec)
                except RuntimeFailure:
                    logger.exception("stopping sandbox %s", sandbox_id)
            self._wait_drained(sandbox_id)
            self.registry.remove(sandbox_id)
            links.destroy(self.settings.naming, sandbox_id)
            slots.release(self.engine, sandbox_id)
            shutil.rmtree(self.settings.sandboxes_dir / sandbox_id, ignore_errors=True)
            record = self._record(sandbox_id)
            if record is not None and record.state != "deleted":
                record.state = "deleted"
                record.deleted_at = datetime.now(UTC)
                record.end_reason = reason
                self._save(record)
        self.audit.flush()

    def _wait_drained(self, sandbox_id: str, timeout: float = 3.0) -> None:
        """Let the gateway see the dead sandbox's connections close, so their audit rows are
        written (with final byte counts) before the deletion returns."""
        deadline = time.monotonic() + timeout
        while self.open_connections(sandbox_id) and time.monotonic() < deadline:
            time.sleep(0.005)

    def _spec_guess(self, sandbox_id: str) -> SandboxSpec:
        """Enough of a spec to stop what a crashed run left behind."""
        netns = links.NETNS_DIR / self.settings.naming.netns(sandbox_id)
        return SandboxSpec(sandbox_id, str(netns), self.settings.sandboxes_dir / sandbox_id)

    # queries
    def get(self, sandbox_id: str) -> SandboxPublic:
        record = self._record(sandbox_id)
        if record is None or record.state == "deleted":
            raise NotFound(f"no sandbox {sandbox_id}")
        return self._public(record)

    def get_any(self, sandbox_id: str) -> SandboxPublic:
        """Also a deleted sandbox (its audit stays readable)."""
        record = self._record(sandbox_id)
        if record is None:
            raise NotFound(f"no sandbox {sandbox_id}")
        return self._public(record)

    def all(self) -> list[SandboxPublic]:
        with Session(self.engine) as session:
            rows = session.exec(select(SandboxRecord).where(
                SandboxRecord.state != "deleted", self._mine()))
            return [self._public(r) for r in rows]

    def runtime_of(self, sandbox_id: str) -> Runtime:
        name = self._runtime_of.get(sandbox_id)
        if name is None:
            raise NotFound(f"no running sandbox {sandbox_id}")
        return self.runtimes[name]

    def spec(self, sandbox_id: str) -> SandboxSpec:
        spec = self._specs.get(sandbox_id)
        if spec is None:
            raise NotFound(f"no running sandbox {sandbox_id}")
        return spec

    # running commands and moving files
    def exec(self, sandbox_id: str, request: ExecRequest) -> ExecResult:
        self.touch(sandbox_id)
        result = run_exec(self.runtime_of(sandbox_id), self.spec(sandbox_id), request.cmd,
                          stdin=request.stdin.encode() if request.stdin is not None else None,
                          env=request.env, cwd=request.cwd, timeout=request.timeout_seconds)
        return ExecResult(exit_code=result.exit_code,
                          stdout=result.stdout.decode(errors="replace"),
                          stderr=result.stderr.decode(errors="replace"),
                          timed_out=result.timed_out)

    async def exec_stream(self, sandbox_id: str,
                          request: ExecRequest) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """(event, data) pairs: stdout/stderr chunks (base64) as they come, then exit."""
        self.touch(sandbox_id)
        command = self.runtime_of(sandbox_id).exec_command(
            self.spec(sandbox_id), bounded(request.cmd, request.timeout_seconds),
                                            env=request.env, cwd=request.cwd)
        process = await asyncio.create_subprocess_exec(
            *command, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE)
        assert process.stdin and process.stdout and process.stderr
        process.stdin.write((request.stdin or "").encode())
        process.stdin.close()
        events: asyncio.Queue[tuple[str, dict[str, Any]] | None] = asyncio.Queue()

        async def pump(name: str, stream: asyncio.StreamReader) -> None:
            while chunk := await stream.read(65536):
                await events.put((name, {"data": base64.b64encode(chunk).decode()}))
            await events.put(None)

        pumps = [asyncio.ensure_future(pump("stdout", process.stdout)),
                 asyncio.ensure_future(pump("stderr", process.stderr))]
        finished, timed_out = 0, False
        deadline = time.monotonic() + request.timeout_seconds
        try:
            while finished < 2:
                try:
                    item = await asyncio.wait_for(events.get(),
                                                  max(deadline - time.monotonic(), 0.01))
                except TimeoutError:
                    timed_out = True
                    process.kill()
                    break
                if item is None:
                    finished += 1
                else:
                    yield item
            code = await process.wait()
        finally:
            for task in pumps:
                task.cancel()
            if process.returncode is None:
                process.kill()
        yield "exit", {"exit_code": 124 if timed_out else code, "timed_out": timed_out}

    def upload(self, sandbox_id: str, upload: FileUpload) -> None:
        try:
            data = base64.b64decode(upload.content_base64, validate=True)
        except ValueError:
            raise BadRequest("content_base64 is not valid base64") from None
        result = run_exec(self.runtime_of(sandbox_id), self.spec(sandbox_id),
                          ["/bin/sh", "-c", 'mkdir -p "$(dirname "$1")" && cat > "$1"', "sh",
                           upload.path], stdin=data,
                          env={}, cwd="/", timeout=120)
        if result.exit_code != 0:
            raise BadRequest(f"cannot write {upload.path}: "
                             f"{result.stderr.decode(errors='replace').strip()}",
                             "the sandbox's root is read-only; write below /tmp")

    def download(self, sandbox_id: str, path: str) -> bytes:
        result = run_exec(self.runtime_of(sandbox_id), self.spec(sandbox_id),
                          ["/bin/cat", "--", path], stdin=None, env={}, cwd="/", timeout=120)
        if result.exit_code != 0:
            raise NotFound(f"cannot read {path}: "
                           f"{result.stderr.decode(errors='replace').strip()}")
        return result.stdout

    def list_files(self, sandbox_id: str, path: str) -> list[dict[str, Any]]:
        script = ('for f in "$1"/* "$1"/.[!.]*; do [ -e "$f" ] || continue; '
                  'if [ -d "$f" ]; then t=dir; s=-; else t=file; s=$(wc -c < "$f"); fi; '
                  'printf "%s\\t%s\\t%s\\n" "$t" "$s" "${f##*/}"; done')
        result = run_exec(self.runtime_of(sandbox_id), self.spec(sandbox_id),
                          ["/bin/sh", "-c", f'[ -d "$1" ] || exit 3; {script}', "sh", path],
                          stdin=None, env={}, cwd="/", timeout=60)
        if result.exit_code != 0:
            raise NotFound(f"{path} is not a directory in the sandbox")
        entries = []
        for line in result.stdout.decode(errors="replace").splitlines():
            kind, size, name = line.split("\t", 2)
            entries.append({"name": name, "type": kind,
                            "size": int(size) if kind == "file" and size.isdigit() else None})
        return entries

    # secrets (values in, never out)
    def put_secret(self, name: str, value: str) -> int:
        self._check_name(name)
        if self.vault is None:
            raise NotReady("the vault is not open")
        try:
            version = self.vault.put(name, value)
        except VaultError as e:
            raise BadRequest(str(e)) from e
        self.after_vault_change()
        return version

    def list_secrets(self) -> list[dict[str, Any]]:
        if self.vault is None:
            return []
        return [{"name": i.name, "version": i.version, "created_at": i.created_at,
                 "updated_at": i.updated_at, "last_used_at": i.last_used_at}
                for i in self.vault.list()]

    def delete_secret(self, name: str) -> None:
        self._check_name(name)
        if self.vault is None or not self.vault.delete(name):
            raise NotFound(f"no secret named {name!r}")
        self.after_vault_change()

    @staticmethod
    def _check_name(name: str) -> None:
        if not re.match(SECRET_NAME, name):
            raise BadRequest(f"invalid secret name {name!r}",
                             "names are letters, digits and '_', not starting with a digit")

    # start-up and shut-down hygiene
    def reconcile(self) -> list[str]:
        """Destroy whatever earlier runs left: records, slots, namespaces, links, runsc state."""
        naming = self.settings.naming
        stale = set(links.existing_ids(naming)) | set(slots.allocated(self.engine,
                                                                      self.gateway_id))
        with Session(self.engine) as session:
            stale |= {r.id for r in session.exec(
                select(SandboxRecord).where(SandboxRecord.state != "deleted", self._mine()))}
        if self.settings.sandboxes_dir.is_dir():
            stale |= {p.name for p in self.settings.sandboxes_dir.iterdir()}
        stale |= {i for name in cgroups.existing(naming.prefix)
                  if (i := naming.id_from_netns(name))}
        for sandbox_id in sorted(stale):
            logger.warning("removing leftover sandbox %s", sandbox_id)
            self._destroy(sandbox_id, "reconciled-after-restart")
        return sorted(stale)

    def shutdown(self) -> None:
        with self._lock:
            self._stopping = True
            warm, self._warm = self._warm, []
        for sandbox_id in [*list(self._specs), *(w.spec.sandbox_id for w in warm)]:
            self._destroy(sandbox_id, "gateway-stopped")

    # storage helpers
    def _record(self, sandbox_id: str) -> SandboxRecord | None:
        """This gateway's record of the sandbox (another gateway's sandboxes, on a shared
        database, are that gateway's business)."""
        with Session(self.engine) as session:
            record = session.get(SandboxRecord, sandbox_id)
        if record is None or record.gateway_id not in (None, self.gateway_id):
            return None
        return record

    def _mine(self) -> Any:
        return or_(SandboxRecord.gateway_id == self.gateway_id,
                   SandboxRecord.gateway_id.is_(None))  # type: ignore[union-attr]

    def _save(self, record: SandboxRecord) -> None:
        with Session(self.engine) as session:
            session.merge(record)
            session.commit()

    def _public(self, record: SandboxRecord) -> SandboxPublic:
        return SandboxPublic(
            id=record.id, runtime=record.runtime, policy=record.policy, state=record.state,
            owner=record.owner, expires_at=record.expires_at, memory_mb=record.memory_mb,
            cpus=record.cpus, max_pids=record.max_pids, end_reason=record.end_reason,
            deleted_at=record.deleted_at,
            ip=record.ip, created_at=record.created_at,
            netns=self.settings.naming.netns(record.id) if record.state != "deleted" else None,
        )
