"""The sandbox lifecycle's world: an in-memory network and runtime, a real image store with
tiny images, a real database and policy store."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway.control.policy_store import PolicyStore
from gateway.control.sandboxes.lifecycle import Sandboxes
from gateway.control.sandboxes.records import Records
from gateway.dataplane.registry import Registry
from gateway.db import make_engine
from gateway.settings import Settings
from sandbox_net.images.store import ImageStore
from sandbox_net.runtime.base import SandboxSpec
from tests.doubles import InMemoryNetwork, InMemoryRuntime
from tests.images import add_image


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
    images: ImageStore


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "web.yaml").write_text(
        "version: 1\nname: web\nrules:\n  - {id: api, hosts: [api.example.test]}\n")
    settings = Settings(home=tmp_path / "home", policy_dir=policies, warm_pool=1,
                        cache_dir=tmp_path / "cache")
    images = ImageStore(settings.images_dir)
    add_image(images, "base")
    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    registry = Registry()
    network = InMemoryNetwork()
    runtime = OrderedRuntime(registry)
    records = Records(engine, "gw1")
    bundle = tmp_path / "bundle.pem"
    bundle.write_text("")
    sandboxes = Sandboxes(settings, records, registry, network, {"gvisor": runtime},
                          PolicyStore(policies), images, ca_bundle=bundle,
                          secret_exists=lambda name: name == "TOKEN")
    world = World(sandboxes, registry, network, runtime, records, images)
    yield world
    world.sandboxes.shutdown()   # releases the images the sandboxes held (a test may restart)
    engine.dispose()
