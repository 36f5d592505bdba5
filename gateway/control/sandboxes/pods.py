"""Pods of a Kubernetes node, wired to the node's gateway by sandgate-cni: the same link,
rules and registration as a sandbox, into the pod's own network namespace (its container
runtime made it and runs the pod; the gateway never starts or stops a pod).

attach:  record -> link into the pod's namespace (rules and source pin verified, then up)
         -> registered (every proxy worker knows it before the link carries a packet
            the runtime lets the pod send)
detach:  unregistered -> connections drained -> link, pin and slot removed -> record closed
Any failure while attaching undoes every step taken. Detaching a pod the gateway does not
know (detached before, or cut off by a gateway restart) succeeds: nothing is left of it.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from gateway.clock import utcnow
from gateway.control.models import SandboxRecord
from gateway.control.policy_store import PolicyHandle
from gateway.control.sandboxes.lifecycle import Sandboxes
from gateway.control.sandboxes.pod_schemas import PodAttach, PodPublic
from gateway.dataplane.registry import SandboxContext, SyntheticPool
from gateway.errors import BadRequest, NotFound, NotReady, Refused, Unavailable
from gateway.timing import DRAIN_TIMEOUT, READY_WAIT
from sandbox_net.addressing import LINK_PREFIX
from sandbox_net.errors import FirewallError, NetError
from sandbox_net.links import NetnsRef
from sandbox_net.names import new_sandbox_id
from sandbox_net.wiring import Wired


class KeyedLocks:
    """A lock per key (a container id), made on first use and dropped once nobody holds or
    waits for it."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[str, tuple[threading.Lock, int]] = {}

    @contextlib.contextmanager
    def hold(self, key: str) -> Iterator[None]:
        with self._guard:
            lock, users = self._locks.get(key) or (threading.Lock(), 0)
            self._locks[key] = (lock, users + 1)
        try:
            with lock:
                yield
        finally:
            with self._guard:
                lock, users = self._locks[key]
                if users == 1:
                    del self._locks[key]
                else:
                    self._locks[key] = (lock, users - 1)

    def users(self, key: str) -> int:
        """How many hold or wait for the lock of `key`."""
        with self._guard:
            return self._locks[key][1] if key in self._locks else 0


RUNTIME = "pod"     # the runtime column of a pod's sandbox record
POD_REFUSED = "pod_namespace_refused"   # the audit reason of a pod _admit refuses


@dataclass(eq=False)
class Pods:
    sandboxes: Sandboxes
    # the Kubernetes namespaces whose pods may bind a secret (Secrets.namespaces); the
    # default lets none
    secret_namespaces: Callable[[str], frozenset[str]] = lambda _name: frozenset()
    _lock: threading.Lock = field(init=False, default_factory=threading.Lock)
    _reserved: set[str] = field(init=False, default_factory=set)   # placeholders attaching
    _containers: KeyedLocks = field(init=False, default_factory=KeyedLocks)
    # by sandbox id: the link of each attached pod and the name of its end in the pod
    _wired: dict[str, tuple[Wired, str]] = field(init=False, default_factory=dict)

    def attach(self, request: PodAttach, owner: str = "local") -> PodPublic:
        box = self.sandboxes
        readiness = box.readiness
        if readiness is not None and not readiness.wait(READY_WAIT):
            raise Unavailable(f"the gateway is not ready: {readiness.describe()}",
                              "retry shortly (Retry-After)")
        handle = box.policies.acquire(request.policy)
        for name in request.secrets:
            if not box.secret_exists(name):
                raise BadRequest(f"no secret named {name!r}",
                                 f"set it first: sandgate secret set {name}")
        self._admit(request, handle, owner)
        # ADD and DEL of one container never overlap: a runtime that gives up on a slow ADD
        # (containerd kills the plugin) sends DEL while the gateway is still attaching, and
        # that DEL must find the attachment finished or failed, never half made.
        with self._containers.hold(request.container_id), self._reserved_for(request):
            return self._attach(request, handle, owner)

    def _attach(self, request: PodAttach, handle: PolicyHandle, owner: str) -> PodPublic:
        box = self.sandboxes
        if box.records.by_container(request.container_id) is not None:
            raise BadRequest(f"container {request.container_id} is already attached",
                             "detach it first (CNI DEL)")
        record = SandboxRecord(
            id=new_sandbox_id(), runtime=RUNTIME, policy=handle.policy.name,
            policy_source=str(handle.path), state="creating", owner=owner,
            gateway_id=box.records.gateway_id, pod=f"{request.namespace}/{request.name}",
            pod_uid=request.uid, container_id=request.container_id, last_active_at=utcnow())
        box.records.save(record)
        try:
            wired = self._wire(record.id, request)
            box.registry.add(SandboxContext(
                id=record.id, ip=wired.ip, handle=handle, pool=SyntheticPool(wired.synthetic),
                secrets=dict(request.secrets), owner=owner, pod=record.pod,
                pod_uid=record.pod_uid))
            # only a record still being created becomes running: one closed meanwhile (a
            # gateway stop) stays closed, and this attachment is undone
            if not box.records.mark_running(record.id, wired.ip):
                raise Unavailable(f"pod {record.pod} was detached while it was being attached",
                                  "retry the ADD")
        except BaseException:
            self._teardown(record.id, "attach-failed")
            raise
        record.state, record.ip = "running", wired.ip
        return _public(record, wired, request.ifname)

    @contextlib.contextmanager
    def _reserved_for(self, request: PodAttach) -> Iterator[None]:
        """Hold the pod's placeholders while it attaches: the check that no other sandbox
        has one and the claim on it are one step, so two ADDs cannot both pass it."""
        wanted = list(request.secrets.values())
        with self._lock:
            for name, placeholder in request.secrets.items():
                # one placeholder, one sandbox: a second binding would let it cross pods
                if (placeholder in self._reserved or wanted.count(placeholder) > 1
                        or self.sandboxes.registry.placeholders.lookup(placeholder)):
                    raise BadRequest(f"the placeholder of {name} is already in use",
                                     "give each pod placeholders of its own")
            self._reserved.update(wanted)
        try:
            yield
        finally:
            with self._lock:
                self._reserved.difference_update(wanted)

    def _admit(self, request: PodAttach, handle: PolicyHandle, owner: str) -> None:
        """Refuse, with an audit row, a pod whose Kubernetes namespace the policy or a secret
        it names does not list: creating a pod of the sandgate runtime must not be a way to
        run under another team's policy or bind another team's secret."""
        namespace = request.namespace
        allowed = handle.policy.spec.kubernetes
        refusal: tuple[str, str] | None = None
        if allowed is None or namespace not in allowed.namespaces:
            refusal = (f"policy {handle.policy.name!r} does not allow pods of Kubernetes "
                       f"namespace {namespace!r}",
                       "its owner lists the namespace under the policy's "
                       "`kubernetes: {namespaces: [...]}` (docs/POLICY.md)")
        else:
            for name in sorted(request.secrets):
                if namespace not in self.secret_namespaces(name):
                    refusal = (f"secret {name!r} may not be bound by pods of Kubernetes "
                               f"namespace {namespace!r}",
                               f"its owner allows it: sandgate secret namespaces {name} "
                               f"{namespace} ... (docs/DEPLOY.md)")
                    break
        if refusal is None:
            return
        self.sandboxes.audit(
            sandbox_id=None, owner=owner, policy=handle.policy.name, decision="deny",
            reason=POD_REFUSED, protocol="sandbox", error=refusal[0],
            secrets=",".join(sorted(request.secrets)) or None,
            pod=f"{namespace}/{request.name}", pod_uid=request.uid)
        raise Refused(*refusal)

    def _wire(self, sandbox_id: str, request: PodAttach) -> Wired:
        try:
            wired = self.sandboxes.network.attach(
                sandbox_id, NetnsRef(request.netns, request.netns_dev, request.netns_ino),
                request.ifname)
        except FirewallError as e:
            raise NotReady(f"egress rules are not in place: {e}",
                           "restart the gateway (sandgate serve) to reinstall them") from e
        except NetError as e:
            raise NotReady(f"pod network setup failed: {e}") from e
        self._wired[sandbox_id] = (wired, request.ifname)
        return wired

    def check(self, container_id: str) -> PodPublic:
        """The pod's attachment, once its rules, source pin, link and registration are
        verified in place. Raises NotFound, NotReady."""
        record = self.sandboxes.records.by_container(container_id)
        attached = self._wired.get(record.id) if record is not None else None
        if record is None or attached is None:
            raise NotFound(f"no pod attached for container {container_id}")
        if self.sandboxes.registry.by_id(record.id) is None:
            raise NotReady(f"pod {record.pod} is not registered with the gateway")
        try:
            self.sandboxes.network.check(record.id)
        except (FirewallError, NetError) as e:
            raise NotReady(f"pod {record.pod}: {e}") from e
        return _public(record, *attached)

    def detach(self, container_id: str) -> None:
        """Waits for an attach of the same container that is under way."""
        with self._containers.hold(container_id):
            record = self.sandboxes.records.by_container(container_id)
            if record is not None:
                self._teardown(record.id, "deleted")

    def shutdown(self) -> None:
        """The gateway stops: every pod loses its link (fail closed)."""
        for sandbox_id in list(self._wired):
            record = self.sandboxes.records.get(sandbox_id)
            with self._containers.hold(record.container_id if record and record.container_id
                                       else sandbox_id):
                if sandbox_id in self._wired:
                    self._teardown(sandbox_id, "gateway-stopped")

    def _teardown(self, sandbox_id: str, reason: str) -> None:
        box = self.sandboxes
        box.registry.remove(sandbox_id)
        deadline = time.monotonic() + DRAIN_TIMEOUT
        while box.open_connections(sandbox_id) and time.monotonic() < deadline:
            time.sleep(0.005)
        box.network.unwire(sandbox_id)
        self._wired.pop(sandbox_id, None)
        box.records.close(sandbox_id, reason)
        box.flush_audit()


def _public(record: SandboxRecord, wired: Wired, ifname: str) -> PodPublic:
    assert record.pod is not None and record.container_id is not None
    return PodPublic(id=record.id, container_id=record.container_id, pod=record.pod,
                     pod_uid=record.pod_uid, policy=record.policy, ifname=ifname,
                     ip=wired.ip, gateway_ip=wired.gateway_ip, prefix=LINK_PREFIX,
                     created_at=record.created_at)
