"""2,000 sandboxes created, used and deleted: every per-sandbox structure of the main process
(lifecycle, registry, placeholder index, rate buckets, connection counts) and of a proxy
worker (its replica, the hub client's activity map) is forgotten, and the memory Python
allocated returns to within 10 % of where it started. The network and runtime are the
in-memory doubles (tests/doubles.py); bench/churn.py measures a real gateway's main process."""

from __future__ import annotations

import gc
import logging
import shutil
import subprocess
import sys
import tempfile
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

from gateway.control.policy_store import PolicyStore
from gateway.control.sandboxes.lifecycle import Sandboxes
from gateway.control.sandboxes.records import Records
from gateway.control.sandboxes.schemas import SandboxCreate
from gateway.dataplane.registry import Registry
from gateway.dataplane.state import GatewayState
from gateway.dataplane.upstream import UpstreamResolver
from gateway.db import make_engine
from gateway.processes import protocol
from gateway.processes.authority import Authority
from gateway.processes.hub import Hub, snapshot
from gateway.processes.hub_client import HubClient
from gateway.processes.replica import Replica
from gateway.settings import Settings
from policies.schema import Limits
from sandbox_net.images.store import ImageStore
from tests.doubles import InMemoryNetwork, InMemoryRuntime, RowSink
from tests.images import add_image

# Root-free, but 2,000 creates take about two minutes here: it runs with the integration
# suites, not within the unit tests' minute.
pytestmark = pytest.mark.integration

CHURN = 2000
WARM_UP = 200
LIMITS = Limits(requests_per_minute=60, bytes_per_minute=10_000)


class Discard:
    """Stands in for the worker's socket to the hub: takes and drops what is written."""

    def write(self, _data: bytes) -> None:
        return None


def test_deleted_sandboxes_leave_nothing_behind(tmp_path: Path) -> None:
    # In an interpreter of its own: the heap it measures is then the gateway's alone, not
    # also what earlier tests in this process left behind (handlers, caches) and keep growing.
    code = ("import sys; from pathlib import Path; "
            "from tests.gateway.control.sandboxes.test_churn import run; run(Path(sys.argv[1]))")
    result = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True,
                            text=True, cwd=Path(__file__).resolve().parents[4], timeout=280)
    assert result.returncode == 0, result.stdout + result.stderr
    print(result.stdout)


def run(tmp_path: Path) -> None:
    shm = Path(tempfile.mkdtemp(dir="/dev/shm"))   # the records' commits: no disk syncs
    try:
        churn(tmp_path, shm)
    finally:
        shutil.rmtree(shm)


def churn(tmp_path: Path, shm: Path) -> None:
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "web.yaml").write_text(
        "version: 1\nname: web\nrules:\n  - {id: api, hosts: [api.example.test]}\n")
    engine = make_engine(f"sqlite:///{shm / 'db.sqlite'}")
    registry = Registry()
    authority = Authority(registry)
    # the hub, not started (no workers): on removal it makes the authority forget
    registry.listener = Hub(authority, RowSink(), registry, tmp_path / "hub.sock")  # type: ignore[arg-type]
    store = PolicyStore(policies)
    bundle = tmp_path / "bundle.pem"
    bundle.write_text("")
    runtime = InMemoryRuntime()
    settings = Settings(home=tmp_path / "home", policy_dir=policies,
                        cache_dir=tmp_path / "cache")    # never the host's image store
    images = ImageStore(settings.images_dir)
    add_image(images, "base")
    sandboxes = Sandboxes(settings, Records(engine, "gw1"), registry, InMemoryNetwork(),
                          {"gvisor": runtime}, store, images, ca_bundle=bundle,
                          secret_exists=lambda _name: True)
    hub_client = HubClient(None, Discard())  # type: ignore[arg-type]
    worker = GatewayState(Registry(), UpstreamResolver(None, lookup=_no_lookup), hub_client)
    replica = Replica(worker, store, lambda: None)

    def one() -> None:
        created = sandboxes.create(SandboxCreate(policy="web", secrets=["TOKEN"]))
        context = registry.by_id(created.id)
        assert context is not None
        replica.apply(protocol.Add(snapshot(context)))
        # traffic: a connection counted and released, buckets taken, activity reported
        assert authority.acquire_for("worker-0-1", created.id, 10)
        assert authority.admit(created.id, "api", LIMITS)
        authority.charge(created.id, "api", LIMITS, 500)
        authority.release_for("worker-0-1", created.id)
        assert authority.acquire_for("worker-1-2", created.id, 10)   # still open at delete
        context.pool.address_for("api.example.test")
        hub_client.active(created.id)
        sandboxes.delete(created.id)
        replica.apply(protocol.Remove(created.id))
        runtime.started.clear()     # the double's own log of starts

    # Log lines are not the gateway's state, but a handler an earlier test left behind
    # (writing to a buffer it keeps) would grow with each sandbox's lines.
    logging.disable(logging.CRITICAL)
    tracemalloc.start()
    for _ in range(WARM_UP):        # caches, pools and interned strings settle first
        one()
    gc.collect()
    before = tracemalloc.get_traced_memory()[0]
    for _ in range(CHURN):
        one()
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    logging.disable(logging.NOTSET)
    engine.dispose()

    assert registry.all() == [] and worker.registry.all() == []
    assert registry.placeholders.lookup_all(_all_placeholders(registry)) == {}
    assert sandboxes._running == {} and sandboxes.deadlines.ids() == set()
    assert authority.limiter._buckets == {}
    assert all(not counts for counts in authority._conns.values())
    assert hub_client._active == {}
    assert after <= before * 1.10, (before, after)
    print(f"python heap: {before / 1024:.0f} KiB after {WARM_UP} sandboxes, "
          f"{after / 1024:.0f} KiB after {CHURN} more")


def _all_placeholders(registry: Registry) -> list[str]:
    return list(registry.placeholders._bindings)


async def _no_lookup(name: str) -> Any:
    raise OSError(name)

