"""The sandbox lifecycle with an in-memory network and runtime: the order of steps (a sandbox
runs only once the gateway knows it; it is forgotten only once it is stopped), undoing every
step of a failed create, deadlines, the warm pool, and start-up reconciliation."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway.control.policy_store import PolicyStore
from gateway.control.sandboxes import lifecycle
from gateway.control.sandboxes.lifecycle import Sandboxes
from gateway.control.sandboxes.records import Records
from gateway.control.sandboxes.schemas import SandboxCreate
from gateway.dataplane.registry import Registry
from gateway.db import make_engine
from gateway.errors import BadRequest, NotReady, Unavailable
from gateway.readiness import Readiness
from gateway.settings import Settings
from sandbox_net.errors import FirewallError
from sandbox_net.runtime.base import SandboxSpec
from tests.doubles import InMemoryNetwork, InMemoryRuntime


class OrderedRuntime(InMemoryRuntime):
    """Records whether the gateway knew each sandbox when it was started."""

    def __init__(self, registry: Registry) -> None:
        super().__init__()
        self.registry = registry
        self.known_at_start: dict[str, bool] = {}

    def start(self, spec: SandboxSpec) -> None:
        self.known_at_start[spec.sandbox_id] = self.registry.by_id(spec.sandbox_id) is not None
        super().start(spec)


@dataclass
class World:
    sandboxes: Sandboxes
    registry: Registry
    network: InMemoryNetwork
    runtime: OrderedRuntime
    records: Records


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "web.yaml").write_text(
        "version: 1\nname: web\nrules:\n  - {id: api, hosts: [api.example.test]}\n")
    settings = Settings(home=tmp_path / "home", policy_dir=policies, warm_pool=1)
    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    registry = Registry()
    network = InMemoryNetwork()
    runtime = OrderedRuntime(registry)
    records = Records(engine, "gw1")
    bundle = tmp_path / "bundle.pem"
    bundle.write_text("")
    sandboxes = Sandboxes(settings, records, registry, network, {"gvisor": runtime},
                          PolicyStore(policies), ca_bundle=bundle,
                          secret_exists=lambda name: name == "TOKEN")
    yield World(sandboxes, registry, network, runtime, records)
    engine.dispose()


def test_a_sandbox_runs_only_once_the_gateway_knows_it(world: World) -> None:
    created = world.sandboxes.create(SandboxCreate(policy="web", secrets=["TOKEN"],
                                                   env={"A": "1"}), owner="tok-1")
    assert world.runtime.known_at_start == {created.id: True}
    context = world.registry.by_id(created.id)
    assert context is not None and context.ip == created.ip
    placeholder = context.secrets["TOKEN"]
    assert placeholder.startswith("sgp_")
    spec = world.runtime.running[created.id]
    assert spec.env["TOKEN"] == placeholder and spec.env["A"] == "1"
    assert (created.state, created.owner, created.policy) == ("running", "tok-1", "web")


def test_delete_undoes_every_step(world: World) -> None:
    created = world.sandboxes.create(SandboxCreate(policy="web"))
    world.sandboxes.delete(created.id)
    assert created.id not in world.runtime.running
    assert world.registry.by_id(created.id) is None
    assert created.id not in world.network.wired
    record = world.records.get(created.id)
    assert record is not None and (record.state, record.end_reason) == ("deleted", "deleted")


def test_a_runtime_that_fails_to_start_leaves_nothing(world: World) -> None:
    world.runtime.fail_start = "boom"
    with pytest.raises(NotReady, match="boom"):
        world.sandboxes.create(SandboxCreate(policy="web"))
    assert world.registry.all() == [] and world.network.wired == {}
    assert world.records.live() == []


def test_rules_not_in_place_refuse_the_create(world: World) -> None:
    world.network.fail_next = FirewallError("table inet sandgate is missing")
    with pytest.raises(NotReady, match="egress rules are not in place"):
        world.sandboxes.create(SandboxCreate(policy="web"))
    assert world.runtime.started == [] and world.registry.all() == []


@pytest.mark.parametrize(("request_", "message"), [
    (dict(policy="web", secrets=["MISSING"]), "no secret named 'MISSING'"),
    (dict(policy="web", env={"A=B": "x"}), "invalid environment variable name"),
    (dict(policy="web", runtime="microvm"), "runtime 'microvm' is not available"),
])
def test_bad_requests_create_nothing(world: World, request_: dict[str, object],
                                     message: str) -> None:
    with pytest.raises(BadRequest, match=message):
        world.sandboxes.create(SandboxCreate.model_validate(request_))
    assert world.runtime.started == [] and world.network.wired == {}


def test_expired_and_idle_sandboxes_are_reaped(world: World) -> None:
    short = world.sandboxes.create(SandboxCreate(policy="web", ttl_seconds=60))
    idle = world.sandboxes.create(SandboxCreate(policy="web", idle_timeout_seconds=30))
    now = time.time()
    assert world.sandboxes.reap(now) == []
    assert world.sandboxes.reap(now + 31) == [idle.id]
    assert world.sandboxes.reap(now + 61) == [short.id]
    assert world.registry.all() == []
    record = world.records.get(idle.id)
    assert record is not None and record.end_reason == "idle"


def test_the_warm_pool_hands_out_a_started_sandbox(world: World) -> None:
    world.sandboxes.keep_warm()
    (warm_id,) = world.runtime.running
    assert world.registry.by_id(warm_id) is None      # unknown: its egress is refused
    created = world.sandboxes.create(SandboxCreate(policy="web"))
    assert created.id == warm_id and world.runtime.started == [warm_id]
    assert world.registry.by_id(warm_id) is not None
    other = world.sandboxes.create(SandboxCreate(policy="web", memory_mb=1024))
    assert other.id != warm_id                          # other limits: not from the pool


def test_start_up_reconciles_what_an_earlier_run_left(world: World) -> None:
    world.network.wire("deadbeef")
    created = world.sandboxes.create(SandboxCreate(policy="web"))
    world.sandboxes._running.clear()        # a new process: it knows nothing yet
    assert set(world.sandboxes.reconcile()) == {"deadbeef", created.id}
    assert world.network.wired == {} and world.records.live() == []


def test_shutdown_stops_every_sandbox_warm_ones_too(world: World) -> None:
    world.sandboxes.keep_warm()
    world.sandboxes.create(SandboxCreate(policy="web", memory_mb=1024))
    world.sandboxes.shutdown()
    assert world.runtime.running == {} and world.network.wired == {}
    assert not world.sandboxes.warm.wanted()


def test_a_create_waits_for_every_worker_then_gives_up_with_retry(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    readiness = Readiness(workers=2)
    world.sandboxes.readiness = readiness
    monkeypatch.setattr(lifecycle, "READY_WAIT", 0.05)
    readiness.update(1)
    with pytest.raises(Unavailable, match="1 of 2 proxy workers are ready") as caught:
        world.sandboxes.create(SandboxCreate(policy="web"))
    assert caught.value.status == 503 and caught.value.retry_after >= 1
    assert world.runtime.started == [] and world.records.live() == []
    monkeypatch.setattr(lifecycle, "READY_WAIT", 30.0)
    threading.Timer(0.05, readiness.update, (2,)).start()   # the second worker comes up
    created = world.sandboxes.create(SandboxCreate(policy="web"))
    assert world.runtime.started == [created.id]
