"""Sandbox lifecycle: the order of steps is the security property.

create:  record -> network wired (rules verified before the link is up) -> registered with
         the gateway -> runtime started
delete:  runtime stopped -> connections drained -> unregistered -> network unwired
         -> record closed
Any failure while creating undoes every step taken.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from gateway.clock import utcnow
from gateway.control.models import SandboxRecord
from gateway.control.policy_store import PolicyHandle, PolicyStore
from gateway.control.sandboxes import adoption, roots
from gateway.control.sandboxes.deadlines import Deadlines
from gateway.control.sandboxes.records import Records, public
from gateway.control.sandboxes.schemas import SandboxCreate, SandboxPublic
from gateway.control.sandboxes.warm import WarmPool
from gateway.dataplane.registry import Registry, SandboxContext, SyntheticPool
from gateway.errors import BadRequest, NotFound, NotReady, Unavailable
from gateway.readiness import Readiness
from gateway.settings import Settings
from gateway.timing import DRAIN_TIMEOUT, READY_WAIT
from sandbox_net.errors import FirewallError, NetError, RuntimeFailure, UnknownImage
from sandbox_net.images.store import LIST_HINT, Hold, Image, ImageStore
from sandbox_net.images.users import RunAs
from sandbox_net.names import new_sandbox_id
from sandbox_net.runtime.base import Runtime, SandboxSpec
from sandbox_net.wiring import SandboxNetwork, Wired
from vault.placeholders import new_placeholder

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Started:
    """A sandbox that runs, wired, before the gateway knows it."""

    spec: SandboxSpec
    wired: Wired
    runtime: str

    @property
    def image_id(self) -> str:
        return self.spec.root.id if self.spec.root else ""


@dataclass(eq=False, repr=False)
class Sandboxes:
    settings: Settings
    records: Records
    registry: Registry
    network: SandboxNetwork
    runtimes: dict[str, Runtime]
    policies: PolicyStore
    images: ImageStore
    _: dataclasses.KW_ONLY
    ca_bundle: Path
    secret_exists: Callable[[str], bool]
    open_connections: Callable[[str], int] = lambda _id: 0
    flush_audit: Callable[[], object] = lambda: None
    readiness: Readiness | None = None
    audit: Callable[..., object] = lambda **_row: None   # AuditWriter.record
    warm: WarmPool = field(init=False)
    _lock: threading.Lock = field(init=False, default_factory=threading.Lock)
    _running: dict[str, Started] = field(init=False, default_factory=dict)
    # each sandbox keeps its image's content
    _holds: dict[str, Hold] = field(init=False, default_factory=dict)
    # warm images found missing (logged once)
    _missing: set[str] = field(init=False, default_factory=set)
    deadlines: Deadlines = field(init=False)

    def __post_init__(self) -> None:
        self.warm = WarmPool(self.settings.warm_pool)
        self.deadlines = Deadlines(self.registry, lambda sandbox_id, moment: self.records.update(
            sandbox_id, last_active_at=moment))

    # create
    def create(self, request: SandboxCreate, owner: str = "local") -> SandboxPublic:
        self._await_ready()
        runtime = self._runtime(request.runtime)
        image = roots.find(self.images, request.image)
        user = roots.run_as(image, request.user)
        handle = self.policies.acquire(request.policy)
        for key in request.env:
            if not key or "=" in key or "\0" in key:
                raise BadRequest(f"invalid environment variable name {key!r}")
        for name in request.secrets:
            if not self.secret_exists(name):
                raise BadRequest(f"no secret named {name!r}",
                                 f"set it first: sandgate secret set {name}")
        started = self.warm.claim(request, image.id)
        sandbox_id = started.spec.sandbox_id if started else new_sandbox_id()
        now = utcnow()
        record = SandboxRecord(
            id=sandbox_id, runtime=runtime.name, image=image.name, image_id=image.id,
            run_as=str(user), disk_mb=request.disk_mb, policy=handle.policy.name,
            policy_source=str(handle.path), state="creating", owner=owner,
            gateway_id=self.records.gateway_id, ttl_seconds=request.ttl_seconds,
            expires_at=now + timedelta(seconds=request.ttl_seconds),
            idle_timeout_seconds=request.idle_timeout_seconds, last_active_at=now,
            memory_mb=request.memory_mb, cpus=request.cpus, max_pids=request.max_pids)
        self.records.save(record)
        try:
            if started is None:
                started = self._start(self._prepare(sandbox_id, request, image, user),
                                      request.runtime, register=(request, handle, record))
            else:
                record.ip = started.wired.ip
                started = self._register(started, request, handle, record)
        except BaseException:
            self.destroy(sandbox_id)
            raise
        self._running[sandbox_id] = started
        # The time to live counts from the request, boot included (the record says so too).
        assert record.expires_at is not None
        self.deadlines.arm(sandbox_id, record.expires_at.timestamp(),
                           request.idle_timeout_seconds)
        record.state = "running"
        # only these columns: the sandbox runs already, and may have been quarantined
        self.records.update(sandbox_id, state=record.state, ip=record.ip)
        return self._public(record)

    def _await_ready(self) -> None:
        """Every proxy worker must listen and know the registry before a sandbox starts, or
        its first connections are refused: wait a little, then ask the caller to retry."""
        if self.readiness is not None and not self.readiness.wait(READY_WAIT):
            raise Unavailable(f"the gateway is not ready: {self.readiness.describe()}",
                              "retry shortly (Retry-After)")

    def _runtime(self, name: str) -> Runtime:
        runtime = self.runtimes.get(name)
        if runtime is None:
            raise BadRequest(f"runtime {name!r} is not available here",
                             f"use one of: {', '.join(sorted(self.runtimes))}")
        try:
            runtime.preflight()
        except RuntimeFailure as e:
            raise NotReady(str(e)) from e
        return runtime

    def _prepare(self, sandbox_id: str, request: SandboxCreate, image: Image,
                 user: RunAs) -> tuple[SandboxSpec, Wired]:
        """The sandbox's image (held while it runs), its network (up only once its rules are
        verified) and spec."""
        try:
            self._holds[sandbox_id] = self.images.hold(image)
        except UnknownImage as e:
            raise BadRequest(str(e), LIST_HINT) from None
        try:
            wired = self.network.wire(sandbox_id)
        except FirewallError as e:
            raise NotReady(f"egress rules are not in place: {e}",
                           "restart the gateway (sandgate serve) to reinstall them") from e
        except NetError as e:
            raise NotReady(f"sandbox network setup failed: {e}") from e
        workdir = self.settings.sandboxes_dir / sandbox_id
        workdir.mkdir(parents=True, exist_ok=True, mode=0o700)
        return SandboxSpec(
            sandbox_id=sandbox_id, netns_path=wired.netns_path, workdir=workdir,
            root=roots.root(image), env=roots.env(image),
            files=roots.files(image, workdir, wired.gateway_ip, self.ca_bundle),
            uid=user.uid, gid=user.gid, cwd=roots.cwd(image), disk_mb=request.disk_mb,
            memory_mb=request.memory_mb, max_pids=request.max_pids, cpus=request.cpus,
            ip=wired.ip, gateway_ip=wired.gateway_ip,
        ), wired

    def _register(self, started: Started, request: SandboxCreate, handle: PolicyHandle,
                  record: SandboxRecord) -> Started:
        """The gateway learns the sandbox: from here its egress is decided by its policy."""
        # The sandbox gets a fresh placeholder per secret, never the value.
        secrets = {name: new_placeholder() for name in request.secrets}
        spec = dataclasses.replace(started.spec,
                                   env={**started.spec.env, **request.env, **secrets})
        # what a restarted gateway needs to take the sandbox back (adoption.py)
        adoption.save(adoption.Saved(started.runtime, spec, secrets))
        self.registry.add(SandboxContext(
            id=spec.sandbox_id, ip=spec.ip, handle=handle,
            pool=SyntheticPool(started.wired.synthetic), env=spec.env,
            secrets=secrets, owner=record.owner))
        return dataclasses.replace(started, spec=spec)

    def _start(self, prepared: tuple[SandboxSpec, Wired], runtime: str,
               register: tuple[SandboxCreate, PolicyHandle, SandboxRecord] | None) -> Started:
        """Register (unless warming up), then boot: a sandbox never runs unknown to the
        gateway's workers, whose first packet would otherwise be refused."""
        spec, wired = prepared
        started = Started(spec, wired, runtime)
        self._running[spec.sandbox_id] = started   # so that a failure tears it down
        if register is not None:
            request, handle, record = register
            record.ip = wired.ip
            started = self._register(started, request, handle, record)
        try:
            self.runtimes[runtime].start(started.spec)
        except RuntimeFailure as e:
            raise NotReady(str(e)) from e
        return started

    def keep_warm(self) -> None:
        """Start gVisor sandboxes until `warm_pool` wait unclaimed for each of the warm images
        (from a background loop). Those of an image that has since been rebuilt or removed
        are stopped."""
        images = {}
        for name in self.settings.warm_image_names:
            image = self.images.find(name)
            if image is None and name not in self._missing:
                logger.warning("warm pool: no image %r (see: sandgate image list)", name)
                self._missing.add(name)
            elif image is not None:
                images[image.id] = image
        for stale in self.warm.drop_except(set(images)):
            self._running[stale.spec.sandbox_id] = stale
            self.destroy(stale.spec.sandbox_id, "warm-pool-image-changed")
        while (image_id := self.warm.wanted(list(images))) is not None:
            image, sandbox_id = images[image_id], new_sandbox_id()
            request = SandboxCreate(policy="-", image=image.name)
            try:
                started = self._start(self._prepare(sandbox_id, request, image,
                                                    roots.run_as(image, None)),
                                      "gvisor", register=None)
            except BaseException:
                self.destroy(sandbox_id, "warm-pool-failed")
                raise
            del self._running[sandbox_id]
            if not self.warm.put(started):
                self.destroy(sandbox_id, "gateway-stopped")   # shut-down began meanwhile

    # delete
    def delete(self, sandbox_id: str) -> None:
        if self.records.get(sandbox_id) is None:
            raise NotFound(f"no sandbox {sandbox_id}")
        self.destroy(sandbox_id, "deleted")

    def reap(self, now: float | None = None) -> list[str]:
        """Kill and remove sandboxes past their time to live or idle timeout."""
        now = time.time() if now is None else now
        ended = self.deadlines.due(now)
        for sandbox_id, reason in ended:
            logger.info("sandbox %s %s; removing it", sandbox_id, reason)
            self.destroy(sandbox_id, reason)
        self.deadlines.keep_activity()
        return [sandbox_id for sandbox_id, _reason in ended]

    def touch(self, sandbox_id: str) -> None:
        self.deadlines.touch(sandbox_id)

    def destroy(self, sandbox_id: str, reason: str = "deleted") -> None:
        with self._lock:
            self.deadlines.drop(sandbox_id)
            started = self._running.pop(sandbox_id, None)
            spec = started.spec if started else self._spec_guess(sandbox_id)
            # A sandbox left by a crash may be of either kind: every runtime's stop is
            # idempotent, so all are asked.
            for runtime in ([self.runtimes[started.runtime]] if started
                            else list(self.runtimes.values())):
                try:
                    runtime.stop(spec)
                except RuntimeFailure:
                    logger.exception("stopping sandbox %s", sandbox_id)
            self._wait_drained(sandbox_id)
            self.registry.remove(sandbox_id)
            self.network.unwire(sandbox_id)
            shutil.rmtree(self.settings.sandboxes_dir / sandbox_id, ignore_errors=True)
            hold = self._holds.pop(sandbox_id, None)
            if hold is not None:
                hold.release()
            self.records.close(sandbox_id, reason)
        self.flush_audit()

    def _wait_drained(self, sandbox_id: str) -> None:
        """Let the gateway see the dead sandbox's connections close, so their audit rows are
        written (with final byte counts) before the deletion returns."""
        deadline = time.monotonic() + DRAIN_TIMEOUT
        while self.open_connections(sandbox_id) and time.monotonic() < deadline:
            time.sleep(0.005)

    def _spec_guess(self, sandbox_id: str) -> SandboxSpec:
        """Enough of a spec to stop what a crashed run left behind."""
        return SandboxSpec(sandbox_id, self.network.netns_path(sandbox_id),
                           self.settings.sandboxes_dir / sandbox_id)

    # queries
    def get(self, sandbox_id: str) -> SandboxPublic:
        record = self.records.get(sandbox_id)
        if record is None or record.state == "deleted":
            raise NotFound(f"no sandbox {sandbox_id}")
        return self._public(record)

    def get_any(self, sandbox_id: str) -> SandboxPublic:
        """Also a deleted sandbox (its audit stays readable)."""
        record = self.records.get(sandbox_id)
        if record is None:
            raise NotFound(f"no sandbox {sandbox_id}")
        return self._public(record)

    def all(self) -> list[SandboxPublic]:
        return [self._public(r) for r in self.records.live()]

    def running(self, sandbox_id: str) -> tuple[Runtime, SandboxSpec]:
        """The runtime and spec of a running sandbox (for commands and files)."""
        started = self._running.get(sandbox_id)
        if started is None:
            raise NotFound(f"no running sandbox {sandbox_id}")
        return self.runtimes[started.runtime], started.spec

    def _public(self, record: SandboxRecord) -> SandboxPublic:
        return public(record, self.settings.naming.netns(record.id))

    # start-up and shut-down
    def reconcile(self) -> list[str]:
        """Adopt the sandboxes an earlier run left running (registered, pinned, deadlines
        resumed); destroy the rest, each with an audit row saying why. Returns those ids."""
        records = {r.id: r for r in self.records.live()}
        found = self.network.leftovers() | set(records)
        if self.settings.sandboxes_dir.is_dir():
            found |= {p.name for p in self.settings.sandboxes_dir.iterdir()}
        destroyed = []
        for sandbox_id in sorted(found):
            try:
                why = self._adopt(sandbox_id, records.get(sandbox_id))
            except Exception as e:   # one odd sandbox must not keep the gateway from starting
                why = f"adopting it failed: {e}"
            logger.info("sandbox %s left by an earlier run: %s", sandbox_id, why or "adopted")
            if why is not None:
                try:
                    self.destroy(sandbox_id, f"reconciled-after-restart: {why}")
                except Exception:   # its egress stays refused; the next start tries again
                    logger.exception("removing sandbox %s left by an earlier run", sandbox_id)
                destroyed.append(sandbox_id)
            self.audit(**adoption.audit_row(sandbox_id, records.get(sandbox_id), why))
        return destroyed

    def _adopt(self, sandbox_id: str, record: SandboxRecord | None) -> str | None:
        """Adopt the sandbox, or say why not (leaving nothing half adopted)."""
        saved = adoption.load(self.settings.sandboxes_dir / sandbox_id)
        why = adoption.obstacle(sandbox_id, record, saved, utcnow())
        if why is not None:
            return why
        assert record is not None and saved is not None and saved.spec.root is not None
        runtime = self.runtimes.get(saved.runtime)
        image = self.images.by_id(record.image or "", saved.spec.root.id)
        if runtime is None or image is None:
            return f"its {'runtime' if runtime is None else 'image'} is not here any more"
        try:
            handle = self.policies.acquire(record.policy_source)
            self._holds[sandbox_id] = self.images.hold(image)
        except (BadRequest, NotFound, UnknownImage) as e:
            return f"cannot take it back: {e}"
        # the network first: `runsc state` fails while the namespace's name is gone
        holder = runtime.holder(saved.spec)   # its namespace is the one this process is in
        try:
            wired = self.network.adopt(sandbox_id, holder)
        except NetError as e:   # no process left: the runtime says best why
            return (runtime.alive(saved.spec) if holder is None else None) or str(e)
        if (why := runtime.alive(saved.spec)) is not None:
            return why
        self.registry.add(SandboxContext(
            id=sandbox_id, ip=wired.ip, handle=handle, pool=SyntheticPool(wired.synthetic),
            env=saved.spec.env, secrets=saved.secrets, owner=record.owner,
            last_active=adoption.last_active(record),
            quarantined=self.settings.quarantine_on_exfil and (
                record.quarantined_at is not None or self.records.exfiltrated(sandbox_id))))
        self._running[sandbox_id] = Started(saved.spec, wired, saved.runtime)
        self.deadlines.arm(sandbox_id, adoption.expiry(record), record.idle_timeout_seconds)
        return None

    def shutdown(self) -> list[str]:
        """Stop the warm pool (nobody's sandboxes yet); keep the others running for the next
        start to adopt, unless `destroy_on_stop`. Returns the ids kept."""
        for started in self.warm.close():
            self._running[started.spec.sandbox_id] = started
            self.destroy(started.spec.sandbox_id, "gateway-stopped")
        if self.settings.destroy_on_stop:
            for sandbox_id in list(self._running):
                self.destroy(sandbox_id, "gateway-stopped")
        self.deadlines.keep_activity(every=0)   # the next start resumes the idle timers
        while self._holds:   # the next start holds the images again
            self._holds.popitem()[1].release()
        return sorted(self._running)
