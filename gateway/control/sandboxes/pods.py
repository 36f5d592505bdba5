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

import threading
import time
from dataclasses import dataclass, field

from gateway.clock import utcnow
from gateway.control.models import SandboxRecord
from gateway.control.sandboxes.lifecycle import Sandboxes
from gateway.control.sandboxes.pod_schemas import PodAttach, PodPublic
from gateway.dataplane.registry import SandboxContext, SyntheticPool
from gateway.errors import BadRequest, NotFound, NotReady, Unavailable
from gateway.timing import DRAIN_TIMEOUT, READY_WAIT
from sandbox_net.addressing import LINK_PREFIX
from sandbox_net.errors import FirewallError, NetError
from sandbox_net.names import new_sandbox_id
from sandbox_net.wiring import Wired

RUNTIME = "pod"     # the runtime column of a pod's sandbox record


@dataclass(eq=False)
class Pods:
    sandboxes: Sandboxes
    _lock: threading.Lock = field(init=False, default_factory=threading.Lock)
    # by sandbox id: the link of each attached pod and the name of its end in the pod
    _wired: dict[str, tuple[Wired, str]] = field(init=False, default_factory=dict)

    def attach(self, request: PodAttach, owner: str = "local") -> PodPublic:
        box = self.sandboxes
        readiness = box.readiness
        if readiness is not None and not readiness.wait(READY_WAIT):
            raise Unavailable(f"the gateway is not ready: {readiness.describe()}",
                              "retry shortly (Retry-After)")
        handle = box.policies.acquire(request.policy)
        for name, placeholder in request.secrets.items():
            if not box.secret_exists(name):
                raise BadRequest(f"no secret named {name!r}",
                                 f"set it first: sandgate secret set {name}")
            # one placeholder, one sandbox: a second binding would let it cross between pods
            if box.registry.placeholders.lookup(placeholder) is not None:
                raise BadRequest(f"the placeholder of {name} is already in use",
                                 "give each pod placeholders of its own")
        with self._lock:   # one attachment per container, also under concurrent ADDs
            if box.records.by_container(request.container_id) is not None:
                raise BadRequest(f"container {request.container_id} is already attached",
                                 "detach it first (CNI DEL)")
            record = SandboxRecord(
                id=new_sandbox_id(), runtime=RUNTIME, policy=handle.policy.name,
                policy_source=str(handle.path), state="creating", owner=owner,
                gateway_id=box.records.gateway_id, pod=f"{request.namespace}/{request.name}",
                pod_uid=request.uid, container_id=request.container_id,
                last_active_at=utcnow())
            box.records.save(record)
        try:
            wired = self._wire(record.id, request)
            record.ip = wired.ip
            box.registry.add(SandboxContext(
                id=record.id, ip=wired.ip, handle=handle, pool=SyntheticPool(wired.synthetic),
                secrets=dict(request.secrets), owner=owner, pod=record.pod,
                pod_uid=record.pod_uid))
        except BaseException:
            self._teardown(record.id, "attach-failed")
            raise
        record.state = "running"
        box.records.update(record.id, state=record.state, ip=record.ip)   # not a trip's columns
        return _public(record, wired, request.ifname)

    def _wire(self, sandbox_id: str, request: PodAttach) -> Wired:
        try:
            wired = self.sandboxes.network.attach(sandbox_id, request.netns, request.ifname)
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
        record = self.sandboxes.records.by_container(container_id)
        if record is not None:
            self._teardown(record.id, "deleted")

    def shutdown(self) -> None:
        """The gateway stops: every pod loses its link (fail closed)."""
        for sandbox_id in list(self._wired):
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
