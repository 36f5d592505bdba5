"""The sandbox lifecycle with an in-memory network and runtime (and a real image store with
tiny images): the order of steps (a sandbox runs only once the gateway knows it; it is
forgotten only once it is stopped), undoing every step of a failed create, deadlines, the
warm pool per image, images and users, and start-up reconciliation."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from gateway.control.sandboxes import lifecycle
from gateway.control.sandboxes.schemas import SandboxCreate
from gateway.errors import BadRequest, NotReady, Unavailable
from gateway.readiness import Readiness
from sandbox_net.errors import FirewallError, ImageInUse
from sandbox_net.runtime.base import SandboxSpec
from tests.gateway.control.sandboxes.conftest import World
from tests.images import add_image


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


def test_a_trip_during_create_is_not_undone_when_create_finishes(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """The sandbox runs (and may trip) before create marks its record running: that last
    write must not put back a copy of the record from before the quarantine."""
    start = world.runtime.start

    def tripping(spec: SandboxSpec) -> None:
        start(spec)
        world.records.quarantine(spec.sandbox_id, "secret_exfil_attempt")

    monkeypatch.setattr(world.runtime, "start", tripping)
    created = world.sandboxes.create(SandboxCreate(policy="web"))
    record = world.records.get(created.id)
    assert record is not None and record.state == "running" and record.ip == created.ip
    assert record.quarantine_reason == "secret_exfil_attempt"


def test_the_warm_pool_hands_out_a_started_sandbox(world: World) -> None:
    world.sandboxes.keep_warm()
    (warm_id,) = world.runtime.running
    assert world.registry.by_id(warm_id) is None      # unknown: its egress is refused
    created = world.sandboxes.create(SandboxCreate(policy="web"))
    assert created.id == warm_id and world.runtime.started == [warm_id]
    assert world.registry.by_id(warm_id) is not None
    other = world.sandboxes.create(SandboxCreate(policy="web", memory_mb=1024))
    assert other.id != warm_id                          # other limits: not from the pool


def test_shutdown_stops_the_warm_pool_and_keeps_the_others(world: World) -> None:
    world.sandboxes.keep_warm()
    (warm_id,) = world.runtime.running
    kept = world.sandboxes.create(SandboxCreate(policy="web", memory_mb=1024))
    assert world.sandboxes.shutdown() == [kept.id]
    assert set(world.runtime.running) == {kept.id} and set(world.network.wired) == {kept.id}
    record = world.records.get(kept.id)
    assert record is not None and record.state == "running"
    assert world.sandboxes.warm.wanted([world.images.get("base").id]) is None
    assert warm_id not in world.network.wired


def test_destroy_on_stop_stops_every_sandbox(world: World) -> None:
    world.sandboxes.settings.destroy_on_stop = True
    world.sandboxes.keep_warm()
    world.sandboxes.create(SandboxCreate(policy="web", memory_mb=1024))
    assert world.sandboxes.shutdown() == []
    assert world.runtime.running == {} and world.network.wired == {}


def test_a_sandbox_runs_on_its_image_and_nothing_of_the_host(world: World,
                                                             tmp_path: Path) -> None:
    image = add_image(world.images, "py", env={"LANG": "C.UTF-8", "PATH": "/opt/py/bin"},
                      workdir="/srv/app", user=None)
    created = world.sandboxes.create(SandboxCreate(policy="web", image="py", disk_mb=64))
    spec = world.runtime.running[created.id]
    assert spec.root is not None and (spec.root.id, spec.root.rootfs) == (image.id,
                                                                         image.rootfs)
    assert (spec.uid, spec.gid, spec.cwd, spec.disk_mb) == (1000, 1000, "/srv/app", 64)
    assert spec.env["LANG"] == "C.UTF-8" and spec.env["PATH"] == "/opt/py/bin"
    assert spec.env["SSL_CERT_FILE"] == "/etc/ssl/certs/ca-certificates.crt"
    # only the gateway's own files, each from the sandbox's workdir or the CA bundle; the
    # bundle at the path the CA variables name, and at no other the image lacks
    assert {f.target for f in spec.files} == {"/etc/resolv.conf", "/etc/hosts",
                                              "/etc/ssl/certs/ca-certificates.crt"}
    assert {f.source.parent for f in spec.files} <= {spec.workdir, tmp_path}
    (image.rootfs / "etc" / "ssl").mkdir()
    (image.rootfs / "etc" / "ssl" / "cert.pem").symlink_to("/elsewhere")
    other = world.sandboxes.create(SandboxCreate(policy="web", image="py"))
    assert "/etc/ssl/cert.pem" in {f.target for f in world.runtime.running[other.id].files}
    assert (created.image, created.user, created.disk_mb) == ("py", "1000:1000", 64)


@pytest.mark.parametrize(("image_user", "requested", "expected"), [
    ("agent", None, "1000:1000"),          # the image's own user
    (None, None, "1000:1000"),             # none: uid 1000
    ("root", None, "1000:1000"),           # root only when the request names it
    ("agent", "root", "0:0"),
    ("agent", "4242", "4242:4242"),        # a number the image does not know
    ("agent", "agent:root", "1000:0"),
])
def test_who_commands_run_as(world: World, image_user: str | None, requested: str | None,
                             expected: str) -> None:
    add_image(world.images, "u", user=image_user)
    created = world.sandboxes.create(SandboxCreate(policy="web", image="u", user=requested))
    assert created.user == expected
    spec = world.runtime.running[created.id]
    assert f"{spec.uid}:{spec.gid}" == expected


@pytest.mark.parametrize(("request_", "message"), [
    (dict(policy="web", image="nope"), "unknown image 'nope'"),
    (dict(policy="web", user="nobody-here"), "user 'nobody-here' is not in the image"),
])
def test_unknown_images_and_users_create_nothing(world: World, request_: dict[str, object],
                                                 message: str) -> None:
    with pytest.raises(BadRequest, match=message) as raised:
        world.sandboxes.create(SandboxCreate.model_validate(request_))
    assert world.runtime.started == [] and world.records.live() == []
    if "image" in request_:
        assert raised.value.hint == "see: sandgate image list"


def test_an_image_in_use_is_kept_until_its_sandboxes_are_gone(world: World) -> None:
    add_image(world.images, "busy")
    created = world.sandboxes.create(SandboxCreate(policy="web", image="busy"))
    with pytest.raises(ImageInUse):
        world.images.remove("busy")
    world.sandboxes.delete(created.id)
    world.images.remove("busy")
    assert world.images.find("busy") is None


def test_the_warm_pool_keeps_sandboxes_per_image_and_drops_stale_ones(world: World) -> None:
    world.sandboxes.settings.warm_images = "base,py"
    py = add_image(world.images, "py", env={"V": "1"})
    world.sandboxes.keep_warm()
    assert sorted(s.root.id for s in world.runtime.running.values() if s.root) == sorted(
        [world.images.get("base").id, py.id])
    claimed = world.sandboxes.create(SandboxCreate(policy="web", image="py"))
    assert world.runtime.running[claimed.id].root.id == py.id  # type: ignore[union-attr]
    as_root = world.sandboxes.create(SandboxCreate(policy="web", image="py", user="root"))
    assert as_root.id not in world.runtime.started[:2]        # another user: a cold one
    rebuilt = add_image(world.images, "py", env={"V": "2"})   # the name, new content
    world.sandboxes.keep_warm()
    warm = [s for s in world.runtime.running.values()
            if s.sandbox_id not in (claimed.id, as_root.id)]
    assert sorted(s.root.id for s in warm if s.root) == sorted(
        [world.images.get("base").id, rebuilt.id])


def test_a_host_without_base_says_how_to_build_it(world: World) -> None:
    world.images.remove("base")
    with pytest.raises(BadRequest, match="unknown image 'base'") as raised:
        world.sandboxes.create(SandboxCreate(policy="web"))
    assert raised.value.hint is not None
    assert "scripts/bootstrap.sh" in raised.value.hint
    assert "sandgate image list" in raised.value.hint


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
