"""A restarted gateway takes back what still runs and destroys the rest, saying why: the
decision (no I/O), the saved state, and the whole start-up with the in-memory network and
runtime (a new Sandboxes and Registry over the same database, network and runtime stand in
for a new gateway process over the same host)."""

from __future__ import annotations

import stat
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import Session

from gateway.audit.models import AuditEvent
from gateway.control.models import SandboxRecord
from gateway.control.sandboxes import adoption
from gateway.control.sandboxes.lifecycle import Sandboxes
from gateway.control.sandboxes.schemas import SandboxCreate
from gateway.dataplane.registry import Registry
from sandbox_net.errors import NetError
from sandbox_net.runtime.base import FileMount, RootImage, SandboxSpec
from tests.gateway.control.sandboxes.conftest import World

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def saved(tmp_path: Path, **changes: Any) -> adoption.Saved:
    spec = SandboxSpec("abc", "/run/netns/t-abc", tmp_path, RootImage(
        "img1", tmp_path / "rootfs", tmp_path / "root.ext4"), env={"TOKEN": "sgp_x"},
        files=(FileMount(tmp_path / "resolv.conf", "/etc/resolv.conf"),), uid=1000,
        gid=1000, ip="10.77.0.2", gateway_ip="10.77.0.1")
    return adoption.Saved("gvisor", replace(spec, **changes), {"TOKEN": "sgp_x"})


def record(**changes: Any) -> SandboxRecord:
    fields: dict[str, Any] = dict(
        id="abc", runtime="gvisor", image="base", image_id="img1", policy="web",
        policy_source="/p/web.yaml", state="running", ip="10.77.0.2",
        expires_at=NOW + timedelta(hours=1))
    return SandboxRecord(**{**fields, **changes})


def test_the_saved_state_comes_back_as_written_and_only_root_reads_it(tmp_path: Path) -> None:
    written = saved(tmp_path)
    adoption.save(written)
    path = tmp_path / adoption.STATE_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert adoption.load(tmp_path) == written
    path.write_text("{not json")
    assert adoption.load(tmp_path) is None
    path.unlink()
    assert adoption.load(tmp_path) is None


def test_a_consistent_running_sandbox_has_no_obstacle(tmp_path: Path) -> None:
    assert adoption.obstacle("abc", record(), saved(tmp_path), NOW) is None
    # SQLite gives the time back without its zone: still UTC
    naive = record(expires_at=(NOW + timedelta(hours=1)).replace(tzinfo=None))
    assert adoption.obstacle("abc", naive, saved(tmp_path), NOW) is None


def test_each_inconsistency_is_named(tmp_path: Path) -> None:
    good = saved(tmp_path)
    cases = [
        (None, good, "no record"),
        (record(state="creating"), good, "it was creating"),
        (record(expires_at=NOW - timedelta(seconds=1)), good, "time to live ran out"),
        (record(), None, "saved state (sandbox.json) is missing"),
        (record(runtime="microvm"), good, "names runtime gvisor, its record microvm"),
        (record(ip="10.77.0.6"), good, "does not match its record"),
        (record(image_id="img2"), good, "another image"),
        (record(), saved(tmp_path, root=None), "another image"),
        (record(idle_timeout_seconds=60, last_active_at=NOW - timedelta(seconds=61)), good,
         "idle timeout ran out"),
    ]
    for rec, state, why in cases:
        found = adoption.obstacle("abc", rec, state, NOW)
        assert found is not None and why in found, (rec, found)


def test_audit_rows_say_adopted_or_why_destroyed() -> None:
    adopted = adoption.audit_row("abc", record(owner="tok"), None)
    assert (adopted["decision"], adopted["reason"], adopted["protocol"]) == \
        ("allow", "sandbox_adopted", "sandbox")
    gone = adoption.audit_row("abc", None, "its runsc container is gone")
    assert (gone["decision"], gone["reason"], gone["error"]) == \
        ("deny", "sandbox_reconciled", "its runsc container is gone")


def restarted(world: World, rows: list[dict[str, Any]]) -> tuple[Sandboxes, Registry]:
    """The same host, database and sandboxes; a new gateway process's memory."""
    old = world.sandboxes
    old.shutdown()
    registry = Registry()
    sandboxes = Sandboxes(old.settings, world.records, registry, world.network,
                          old.runtimes, old.policies, world.images, ca_bundle=old.ca_bundle,
                          secret_exists=old.secret_exists,
                          audit=lambda **row: rows.append(row))
    world.sandboxes = sandboxes
    return sandboxes, registry


def test_a_restart_adopts_what_runs_and_destroys_the_rest(world: World) -> None:
    kept = world.sandboxes.create(SandboxCreate(policy="web", secrets=["TOKEN"],
                                                env={"A": "1"}, ttl_seconds=600))
    before = world.registry.by_id(kept.id)
    assert before is not None
    crashed = world.sandboxes.create(SandboxCreate(policy="web"))
    world.network.wire("deadbeef")               # a wire no record knows
    rows: list[dict[str, Any]] = []
    sandboxes, registry = restarted(world, rows)
    world.runtime.running.pop(crashed.id)        # its runtime died while the gateway was down

    assert sandboxes.reconcile() == sorted(["deadbeef", crashed.id])
    after = registry.by_id(kept.id)
    assert after is not None
    assert (after.ip, after.secrets, after.env, after.owner) == \
        (before.ip, before.secrets, before.env, before.owner)
    binding = registry.placeholders.lookup(before.secrets["TOKEN"])
    assert binding is not None and (binding.sandbox_id, binding.secret) == (kept.id, "TOKEN")
    assert set(world.network.wired) == {kept.id} and set(world.runtime.running) == {kept.id}
    why = {row["sandbox_id"]: (row["reason"], row["error"]) for row in rows}
    assert why == {kept.id: ("sandbox_adopted", None),
                   crashed.id: ("sandbox_reconciled", "not running"),
                   "deadbeef": ("sandbox_reconciled",
                                "no record of it (left by an interrupted create or another "
                                "data dir)")}
    record = world.records.get(crashed.id)
    assert record is not None and record.end_reason == "reconciled-after-restart: not running"
    # its time to live resumes: reaped when it runs out, not before
    assert sandboxes.reap(time.time() + 590) == []
    assert sandboxes.reap(time.time() + 601) == [kept.id]
    assert world.runtime.running == {}


def test_a_sandbox_whose_network_is_gone_is_destroyed(world: World) -> None:
    created = world.sandboxes.create(SandboxCreate(policy="web"))
    rows: list[dict[str, Any]] = []
    sandboxes, registry = restarted(world, rows)
    world.network.wired.pop(created.id)
    assert sandboxes.reconcile() == [created.id]
    assert registry.all() == [] and world.runtime.running == {}
    assert rows[0]["error"] == "its network namespace is gone"


def test_a_quarantine_survives_the_restart(world: World) -> None:
    caught = world.sandboxes.create(SandboxCreate(policy="web", secrets=["TOKEN"]))
    clean = world.sandboxes.create(SandboxCreate(policy="web"))
    with Session(world.records.engine) as session:   # the row its exfiltration attempt left
        session.add(AuditEvent(sandbox_id=caught.id, decision="deny",
                               reason="secret_exfil_attempt", protocol="http"))
        session.commit()
    sandboxes, registry = restarted(world, [])
    assert sandboxes.reconcile() == []
    quarantined = {c.id: c.quarantined for c in registry.all()}
    assert quarantined == {caught.id: True, clean.id: False}


def test_a_quarantine_on_the_record_survives_a_restart_without_its_audit_row(
        world: World) -> None:
    """Killed within the audit writer's last second after the trip: no row, but the trip
    wrote the record (gateway.processes.serve: Authority.keep_quarantine)."""
    caught = world.sandboxes.create(SandboxCreate(policy="web", secrets=["TOKEN"]))
    world.records.quarantine(caught.id, "secret_exfil_attempt")
    sandboxes, registry = restarted(world, [])
    assert sandboxes.reconcile() == []
    context = registry.by_id(caught.id)
    assert context is not None and context.quarantined
    shown = sandboxes.get(caught.id)
    assert shown.quarantined_at is not None and shown.quarantine_reason == \
        "secret_exfil_attempt"


def test_the_idle_timer_resumes_from_the_last_activity_written(world: World) -> None:
    idle = world.sandboxes.create(SandboxCreate(policy="web", idle_timeout_seconds=60))
    active_at = time.time() - 50       # an earlier run wrote this activity, then was killed
    world.records.update(idle.id, last_active_at=datetime.fromtimestamp(active_at, UTC))
    sandboxes, registry = restarted(world, [])
    assert sandboxes.reconcile() == []
    context = registry.by_id(idle.id)
    assert context is not None and context.last_active == pytest.approx(active_at, abs=0.01)
    assert sandboxes.reap(active_at + 59) == []
    assert sandboxes.reap(active_at + 61) == [idle.id]


def test_the_last_activity_is_written_coarsely_and_exactly_at_a_clean_stop(
        world: World) -> None:
    idle = world.sandboxes.create(SandboxCreate(policy="web", idle_timeout_seconds=600))
    plain = world.sandboxes.create(SandboxCreate(policy="web"))
    contexts = [world.registry.by_id(s.id) for s in (idle, plain)]
    assert contexts[0] is not None and contexts[1] is not None
    start = contexts[0].last_active

    def written(sandbox_id: str) -> float:
        record = world.records.get(sandbox_id)
        assert record is not None and record.last_active_at is not None
        return adoption.last_active(record)

    created = written(idle.id)                                 # the record's creation time
    for seconds, expected in ((10, created), (31, start + 31), (45, start + 31)):
        for context in contexts:
            context.last_active = start + seconds
        world.sandboxes.reap(start + seconds)
        assert written(idle.id) == pytest.approx(expected, abs=0.01), seconds
    assert written(plain.id) < start + 1                   # no idle timeout: not written
    world.sandboxes.shutdown()
    assert written(idle.id) == pytest.approx(start + 45, abs=0.01)


def test_a_sandbox_that_cannot_be_checked_is_destroyed_and_the_start_goes_on(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    odd, fine = (world.sandboxes.create(SandboxCreate(policy="web")) for _ in range(2))
    rows: list[dict[str, Any]] = []
    sandboxes, registry = restarted(world, rows)
    alive = world.runtime.alive

    def failing(spec: SandboxSpec) -> str | None:
        if spec.sandbox_id == odd.id:
            raise OSError("proc is unreadable")
        return alive(spec)

    monkeypatch.setattr(world.runtime, "alive", failing)
    assert sandboxes.reconcile() == [odd.id]
    assert [c.id for c in registry.all()] == [fine.id]
    assert {r["sandbox_id"]: r["error"] for r in rows} == {
        odd.id: "adopting it failed: proc is unreadable", fine.id: None}


def test_a_leftover_that_cannot_be_removed_does_not_stop_the_start(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """Its rules stay refused either way; the gateway must still start for the others."""
    stuck, fine = (world.sandboxes.create(SandboxCreate(policy="web")) for _ in range(2))
    sandboxes, registry = restarted(world, [])
    world.runtime.running.pop(stuck.id)
    unwire = world.network.unwire

    def failing(sandbox_id: str) -> None:
        if sandbox_id == stuck.id:
            raise NetError("removing link: Device or resource busy")
        unwire(sandbox_id)

    monkeypatch.setattr(world.network, "unwire", failing)
    assert sandboxes.reconcile() == [stuck.id]
    assert [c.id for c in registry.all()] == [fine.id]
