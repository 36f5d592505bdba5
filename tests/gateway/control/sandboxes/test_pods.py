"""Pods attached by sandgate-cni, with an in-memory network: registered with their identity
and placeholders only once wired, refused (and nothing left) on a bad policy, secret,
placeholder, double attach or wiring failure; CHECK sees a missing registration or rule;
detach is idempotent; a gateway shut-down cuts every pod off."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from gateway.control.policy_store import PolicyStore
from gateway.control.sandboxes.lifecycle import Sandboxes
from gateway.control.sandboxes.pod_schemas import PodAttach
from gateway.control.sandboxes.pods import Pods
from gateway.control.sandboxes.records import Records
from gateway.dataplane.registry import Registry
from gateway.db import make_engine
from gateway.errors import BadRequest, NotFound, NotReady, Refused, Unavailable
from gateway.settings import Settings
from sandbox_net.errors import FirewallError, NetError
from sandbox_net.images.store import ImageStore
from sandbox_net.links import NetnsRef
from sandbox_net.wiring import Wired
from tests.doubles import InMemoryNetwork
from tests.harness import wait_for
from vault.placeholders import new_placeholder

# secret -> the Kubernetes namespaces whose pods may bind it (OTHER: another team's)
SECRETS = {"TOKEN": frozenset({"team-a"}), "OTHER": frozenset({"team-b"})}
AUDITED: list[dict[str, object]] = []


def sandboxes_over(tmp_path: Path, policies: Path, **extra: Any) -> Sandboxes:
    """Sandboxes on an in-memory network (no runtimes: pods bring their own) and a real
    database and policy store."""
    settings = Settings(home=tmp_path / "home", policy_dir=policies, cache_dir=tmp_path / "c")
    bundle = tmp_path / "bundle.pem"
    bundle.write_text("")
    return Sandboxes(settings, Records(make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}"), "gw1"),
                     Registry(), InMemoryNetwork(), {}, PolicyStore(policies),
                     ImageStore(settings.images_dir), ca_bundle=bundle, **extra)


@pytest.fixture
def pods(tmp_path: Path) -> Iterator[Pods]:
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "web.yaml").write_text(
        "version: 1\nname: web\nrules:\n  - {id: api, hosts: [api.example.test]}\n"
        "kubernetes: {namespaces: [team-a]}\n")
    # the most permissive policy, which no namespace was given
    (policies / "open.yaml").write_text(
        "version: 1\nname: open\nrules:\n  - {id: all, hosts: ['*.example.test']}\n")
    # a base policy's list is not inherited: the child's own key decides
    (policies / "child.yaml").write_text("version: 1\nname: child\nextends: [web]\n")
    sandboxes = sandboxes_over(tmp_path, policies, secret_exists=lambda name: name in SECRETS,
                               audit=lambda **row: AUDITED.append(row))
    AUDITED.clear()
    yield Pods(sandboxes, secret_namespaces=lambda name: SECRETS.get(name, frozenset()))
    sandboxes.records.engine.dispose()


def attach(container_id: str = "c1", **fields: object) -> PodAttach:
    return PodAttach.model_validate({
        "container_id": container_id, "netns": f"/proc/1/task/{container_id}",
        "netns_dev": 4, "netns_ino": 4026531840, "ifname": "eth0",
        "namespace": "team-a", "name": "web-0", "uid": "0b3c-11", "policy": "web", **fields})


def network(pods: Pods) -> InMemoryNetwork:
    assert isinstance(pods.sandboxes.network, InMemoryNetwork)
    return pods.sandboxes.network


def test_an_attached_pod_is_wired_then_registered_with_its_identity(pods: Pods) -> None:
    placeholder = new_placeholder()
    pod = pods.attach(attach(secrets={"TOKEN": placeholder}))
    context = pods.sandboxes.registry.by_id(pod.id)
    assert context is not None and context.ip == pod.ip
    assert (context.pod, context.pod_uid, context.secrets) == \
        ("team-a/web-0", "0b3c-11", {"TOKEN": placeholder})
    assert context.pod_fields() == {"pod": "team-a/web-0", "pod_uid": "0b3c-11"}
    assert network(pods).wired[pod.id].netns_path == "/proc/1/task/c1"
    record = pods.sandboxes.records.by_container("c1")
    assert record is not None and (record.state, record.runtime, record.pod) == \
        ("running", "pod", "team-a/web-0")
    assert (pod.prefix, pod.gateway_ip) == (30, network(pods).wired[pod.id].gateway_ip)
    assert pods.check("c1") == pod


@pytest.mark.parametrize(("fields", "error"), [
    ({"policy": "nope"}, NotFound),
    ({"secrets": {"MISSING": new_placeholder()}}, BadRequest),
])
def test_a_refused_pod_leaves_nothing(pods: Pods, fields: dict[str, object],
                                      error: type[Exception]) -> None:
    with pytest.raises(error):
        pods.attach(attach(**fields))
    assert network(pods).wired == {} and pods.sandboxes.registry.all() == []
    assert pods.sandboxes.records.live() == []


def test_a_placeholder_is_bound_to_one_pod_only(pods: Pods) -> None:
    placeholder = new_placeholder()
    pods.attach(attach("c1", secrets={"TOKEN": placeholder}))
    with pytest.raises(BadRequest, match="already in use"):
        pods.attach(attach("c2", secrets={"TOKEN": placeholder}))
    assert len(network(pods).wired) == 1


def test_a_container_attaches_once(pods: Pods) -> None:
    pods.attach(attach("c1"))
    with pytest.raises(BadRequest, match="already attached"):
        pods.attach(attach("c1"))
    assert len(network(pods).wired) == 1


@pytest.mark.parametrize("failure", [FirewallError("table missing"), NetError("no netns")])
def test_a_wiring_failure_fails_attach_and_leaves_nothing(pods: Pods,
                                                          failure: Exception) -> None:
    network(pods).fail_next = failure
    with pytest.raises(NotReady, match=str(failure)):
        pods.attach(attach())
    assert pods.sandboxes.registry.all() == [] and pods.sandboxes.records.live() == []
    record = pods.sandboxes.records.by_container("c1")
    assert record is None


def test_check_fails_without_registration_or_link(pods: Pods) -> None:
    pod = pods.attach(attach())
    context = pods.sandboxes.registry.remove(pod.id)
    with pytest.raises(NotReady, match="not registered"):
        pods.check("c1")
    assert context is not None
    pods.sandboxes.registry.add(context)
    network(pods).unwire(pod.id)
    with pytest.raises(NotReady, match="not wired"):
        pods.check("c1")
    with pytest.raises(NotFound):
        pods.check("c2")


def test_detach_is_idempotent_and_shutdown_cuts_every_pod_off(pods: Pods) -> None:
    first = pods.attach(attach("c1"))
    pods.detach("c1")
    pods.detach("c1")
    pods.detach("never-attached")
    assert first.id not in network(pods).wired and pods.sandboxes.registry.all() == []
    record = pods.sandboxes.records.get(first.id)
    assert record is not None and (record.state, record.end_reason) == ("deleted", "deleted")
    second = pods.attach(attach("c1"))      # the same container may attach again
    pods.shutdown()
    assert network(pods).wired == {}
    record = pods.sandboxes.records.get(second.id)
    assert record is not None and record.end_reason == "gateway-stopped"


@pytest.mark.parametrize(("fields", "refusal"), [
    ({"namespace": "team-b"}, "policy 'web' does not allow pods of Kubernetes namespace 'team-b'"),
    ({"policy": "open"}, "policy 'open' does not allow pods of Kubernetes namespace 'team-a'"),
    ({"policy": "child"}, "policy 'child' does not allow pods of Kubernetes namespace 'team-a'"),
    ({"secrets": {"TOKEN": new_placeholder(), "OTHER": new_placeholder()}},
     "secret 'OTHER' may not be bound by pods of Kubernetes namespace 'team-a'"),
])
def test_a_pod_uses_only_policies_and_secrets_its_namespace_is_allowed(
        pods: Pods, fields: dict[str, object], refusal: str) -> None:
    """Whoever may create a pod of the sandgate runtime must not run it under another
    team's policy, or one that lists no namespace, nor bind another team's secret."""
    request = attach(**fields)
    with pytest.raises(Refused, match=refusal) as refused:
        pods.attach(request)
    assert refused.value.status == 403 and refused.value.hint
    assert network(pods).wired == {} and pods.sandboxes.registry.all() == []
    assert pods.sandboxes.records.live() == []
    (row,) = AUDITED
    assert (row["decision"], row["reason"], row["protocol"], row["error"]) == \
        ("deny", "pod_namespace_refused", "sandbox", refusal)
    assert (row["pod"], row["pod_uid"], row["policy"]) == \
        (f"{request.namespace}/web-0", "0b3c-11", request.policy)
    # the same pod, in the namespace both allow, with the secret its team owns, attaches
    assert pods.attach(attach(secrets={"TOKEN": new_placeholder()})).pod == "team-a/web-0"


def test_pods_bind_no_secret_by_default(tmp_path: Path) -> None:
    """Pods built without a secret allow-list (the default) may bind no secret at all."""
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "web.yaml").write_text(
        "version: 1\nname: web\nkubernetes: {namespaces: [team-a]}\n")
    sandboxes = sandboxes_over(tmp_path, policies, secret_exists=lambda name: name == "TOKEN")
    try:
        with pytest.raises(Refused, match="secret 'TOKEN' may not be bound"):
            Pods(sandboxes).attach(attach(secrets={"TOKEN": new_placeholder()}))
        assert Pods(sandboxes).attach(attach()).policy == "web"
    finally:
        sandboxes.records.engine.dispose()


class SlowNetwork(InMemoryNetwork):
    """The first attach stops inside the wiring until the test lets it go (a slow ADD, the
    kind containerd gives up on); `during` runs at that point."""

    def __init__(self) -> None:
        super().__init__()
        self.entered, self.go = threading.Event(), threading.Event()
        self.during: Callable[[str], None] = lambda _sandbox_id: None
        self.calls = 0

    def attach(self, sandbox_id: str, netns: NetnsRef, ifname: str) -> Wired:
        self.calls += 1
        if self.calls == 1:
            self.during(sandbox_id)
            self.entered.set()
            assert self.go.wait(30), "the test never let the attach go on"
        return super().attach(sandbox_id, netns, ifname)


def in_thread(call: Callable[[], object]) -> tuple[threading.Thread, list[object]]:
    outcome: list[object] = []

    def target() -> None:
        try:
            outcome.append(call())
        except Exception as e:
            outcome.append(e)

    thread = threading.Thread(target=target)
    thread.start()
    return thread, outcome


@pytest.fixture
def slow(pods: Pods) -> SlowNetwork:
    network = SlowNetwork()
    pods.sandboxes.network = network
    return network


def test_a_del_during_a_slow_add_waits_for_it_and_leaves_nothing(
        pods: Pods, slow: SlowNetwork) -> None:
    adding, added = in_thread(lambda: pods.attach(attach("c1")))
    assert slow.entered.wait(30)
    deleting, _ = in_thread(lambda: pods.detach("c1"))
    # the DEL is either done (it did not wait: the bug) or waiting for the ADD's lock
    wait_for(lambda: not deleting.is_alive() or pods._containers.users("c1") == 2, 30, 0.01)
    assert deleting.is_alive(), "DEL went ahead while the ADD was still attaching"
    slow.go.set()
    adding.join(30)
    deleting.join(30)
    assert not isinstance(added[0], Exception)
    # the DEL came after the ADD: nothing is left, the record stays closed
    assert slow.wired == {} and slow.slots == {} and pods.sandboxes.registry.all() == []
    assert pods.sandboxes.records.live() == []
    # the next pod takes the released slot, and its address is the only one registered
    pod = pods.attach(attach("c2"))
    assert [c.ip for c in pods.sandboxes.registry.all()] == [pod.ip]


def test_an_attach_whose_record_was_closed_meanwhile_undoes_itself(
        pods: Pods, slow: SlowNetwork) -> None:
    """A record closed while the pod was being wired (a gateway stop) is never reopened."""
    closed: list[str] = []

    def close(sandbox_id: str) -> None:
        pods.sandboxes.records.close(sandbox_id, "gateway-stopped")
        closed.append(sandbox_id)

    slow.during = close
    slow.go.set()
    with pytest.raises(Unavailable, match="detached while it was being attached"):
        pods.attach(attach("c1"))
    assert slow.wired == {} and slow.slots == {} and pods.sandboxes.registry.all() == []
    record = pods.sandboxes.records.get(closed[0])
    assert record is not None and (record.state, record.end_reason) == \
        ("deleted", "gateway-stopped")


def test_two_adds_with_one_placeholder_cannot_both_pass(pods: Pods, slow: SlowNetwork) -> None:
    placeholder = new_placeholder()
    first, outcome = in_thread(lambda: pods.attach(attach("c1", secrets={"TOKEN": placeholder})))
    assert slow.entered.wait(30)   # the first passed the check and is being wired
    try:
        with pytest.raises(BadRequest, match="already in use"):
            pods.attach(attach("c2", secrets={"TOKEN": placeholder}))
    finally:
        slow.go.set()
        first.join(30)
    assert not isinstance(outcome[0], Exception)
    assert len(slow.wired) == 1
    # once the first is gone, the placeholder is free again (nothing stays reserved)
    pods.detach("c1")
    pods.attach(attach("c2", secrets={"TOKEN": placeholder}))
    assert len(slow.wired) == 1


def test_one_request_cannot_use_a_placeholder_twice(pods: Pods) -> None:
    placeholder = new_placeholder()
    SECRETS["TOKEN2"] = frozenset({"team-a"})
    try:
        with pytest.raises(BadRequest, match="already in use"):
            pods.attach(attach(secrets={"TOKEN": placeholder, "TOKEN2": placeholder}))
    finally:
        del SECRETS["TOKEN2"]


def test_container_locks_are_dropped_once_unused(pods: Pods) -> None:
    pods.attach(attach("c1"))
    pods.detach("c1")
    pods.detach("c2")
    assert pods._containers.users("c1") == pods._containers.users("c2") == 0
    assert pods._containers._locks == {}


@pytest.mark.parametrize("policy", ["web.yaml", "policy.yml"])
def test_a_pod_names_a_stored_policy_never_a_file(policy: str) -> None:
    """The gateway would read `*.yaml` as a file of its own, around the namespace lists of
    stored policies."""
    with pytest.raises(ValidationError, match="stored policy's name"):
        attach(policy=policy)
