"""Sandboxes survive a gateway restart: a command started in a gVisor and in a microVM
sandbox keeps running with its files across a clean stop and across a kill -9, their egress
is refused while the gateway is down (never direct), and their next allowed request, with
its credential injected, succeeds once the gateway is back. A sandbox found inconsistent at
start-up (its runsc container gone) is destroyed with an audit row saying why; one whose
namespace lost its name is named again from its runsc process, and one whose name is an empty
mount point (a restarted systemd unit's fresh mount namespace) from its QEMU process. A clean
stop writes each sandbox's last activity to its record (its idle timer resumes from there).

One gateway and its sandboxes serve every check, in order (a microVM boots slowly here)."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from gateway.client import Client, Sandbox, SandgateAPIError
from tests.conftest import killed_after, leftovers
from tests.harness import REPO, Gateway, wait_for, worker_processes
from tests.topology import HTTPS_IP, Topology

# each test restarts the gateway and runs commands in a microVM under software emulation:
# minutes on a loaded machine (164 s for the first on a quiet one)
pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

TOKEN = "restart-token-" + secrets.token_hex(12)
POLICY = """version: 1
name: restart
rules:
  - id: api
    hosts: [secure.upstream.test]
    ports: [443]
    inject: [{secret: API_TOKEN, as: bearer}]
"""
# a command that outlives the exec that starts it: a tick a second, and a file of its own
START = ("echo kept > /workspace/data; "
         "nohup sh -c 'while :; do date +%s >> /workspace/ticks; sleep 1; done' "
         ">/dev/null 2>&1 & echo $! > /workspace/pid")
STATUS = ("kill -0 $(cat /workspace/pid) && echo alive $(cat /workspace/pid); "
          "cat /workspace/data; wc -l < /workspace/ticks")
CALL = ('curl -sS --max-time 20 -H "Authorization: Bearer $API_TOKEN" '
        "https://secure.upstream.test/echo")
GAP = ("curl -sS --max-time 10 -o /dev/null https://secure.upstream.test/gap; echo name=$?; "
       f"curl -sS --max-time 10 -o /dev/null -k https://{HTTPS_IP}/gap; echo direct=$?")


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, topology: Topology) -> Iterator[Gateway]:
    with killed_after(tmp_path_factory.mktemp("restart"), topology) as gateway:
        gateway.extra_env["SANDGATE_DESTROY_ON_STOP"] = "0"   # what `sandgate serve` does
        start(gateway)
        gateway.set_secret("API_TOKEN", TOKEN)
        yield gateway


@pytest.fixture(scope="module")
def admin(gw: Gateway) -> Iterator[Client]:
    with gw.admin_client("restart-admin", {"restart": POLICY}) as client:
        yield client


@pytest.fixture(scope="module")
def sandboxes(admin: Client, gw: Gateway) -> Iterator[dict[str, Sandbox]]:
    made = {runtime: admin.create("restart", runtime=runtime, secrets=["API_TOKEN"],
                                  ttl_seconds=1800, idle_timeout_seconds=1800)
            for runtime in ("gvisor", "microvm")}
    try:
        yield made
    finally:
        for sandbox in made.values():
            if gw.healthy():
                sandbox.delete()


def start(gw: Gateway) -> None:
    """Start the gateway and wait until ready: adopting a microVM (its guest agent asked
    under software emulation) on a loaded machine takes longer than the usual minute."""
    gw.launch()
    gw.wait_until(gw.healthy, timeout=240)


def sh(sandbox: Sandbox, script: str) -> str:
    result = sandbox.exec(["/bin/sh", "-c", script], timeout=60)
    assert result.exit_code == 0, result.stderr
    return result.stdout


def local_argv(gw: Gateway, sandbox: Sandbox, script: str) -> list[str]:
    """The host command that runs `script` in the sandbox without the gateway."""
    with gw.client() as c:
        response = c.post(f"/v1/sandboxes/{sandbox.id}/local-exec",
                          json={"cmd": ["/bin/sh", "-c", script]})
        assert response.status_code == 200, response.text
        return list(response.json()["argv"])


def status(sandbox: Sandbox) -> tuple[str, str, int]:
    alive, data, ticks = sh(sandbox, STATUS).splitlines()
    return alive, data, int(ticks)


def allowed_call(sandbox: Sandbox, topology: Topology) -> str:
    """An allowed HTTPS call: the upstream gets the real value, the sandbox its placeholder."""
    mark = topology.mark()
    answer = json.loads(sh(sandbox, CALL))
    assert [e["headers"]["authorization"] for e in topology.events(mark, "http")] == \
        [f"Bearer {TOKEN}"]
    placeholder = str(answer["headers"]["authorization"]).removeprefix("Bearer ")
    assert placeholder.startswith("sgp_")
    return placeholder


def runtime_processes(sandbox_id: str) -> list[str]:
    """'PID SESSION ARGS' of the sandbox's runsc or QEMU processes."""
    ps = subprocess.run(["ps", "-eww", "-o", "pid=,sid=,args="], capture_output=True,
                        text=True).stdout
    return [line for line in ps.splitlines()
            if ("runsc" in line or "qemu-system" in line) and sandbox_id in line]


def named_as_its_process(gw: Gateway, sandbox: Sandbox) -> bool:
    """The namespace's name (/run/netns) is the namespace its runsc or QEMU process is in."""
    name = Path(f"/run/netns/{gw.prefix}-{sandbox.id}")
    for line in runtime_processes(sandbox.id):
        with contextlib.suppress(OSError):   # a runsc exec process may be gone meanwhile
            if os.path.samestat(name.stat(), os.stat(f"/proc/{line.split()[0]}/ns/net")):
                return True
    return False


def last_active(gw: Gateway, sandbox: Sandbox) -> float:
    """The last activity the gateway wrote to the sandbox's record."""
    with contextlib.closing(sqlite3.connect(f"file:{gw.home / 'sandgate.db'}?mode=ro",
                                            uri=True)) as db:
        (value,) = db.execute("SELECT last_active_at FROM sandbox WHERE id = ?",
                              (sandbox.id,)).fetchone()
    return datetime.fromisoformat(value).replace(tzinfo=UTC).timestamp()


def gap_probe(argv: list[str], topology: Topology) -> dict[str, str]:
    """From inside the sandbox while the gateway is down: no name, no way out, nothing
    reaches the test internet."""
    mark = topology.mark()
    result = subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert topology.events(mark) == []
    return dict(line.split("=", 1) for line in result.stdout.split())


def adopted_rows(gw: Gateway, since: int) -> dict[str, dict[str, Any]]:
    return {r["sandbox_id"]: r for r in gw.audit_rows(since)
            if r["protocol"] == "sandbox"}


def survives(gw: Gateway, topology: Topology, made: dict[str, Sandbox], sig: int,
             during_gap: Callable[[], None] = lambda: None) -> None:
    before = {name: (status(s), allowed_call(s, topology)) for name, s in made.items()}
    argv = {name: local_argv(gw, s, GAP) for name, s in made.items()}
    assert gw.process is not None   # a session leader: a Ctrl-C would reach its session
    for sandbox in made.values():
        assert all(line.split()[1] != str(gw.process.pid)
                   for line in runtime_processes(sandbox.id)), "in the gateway's session"
    last = gw.last_audit_id()
    code = gw.stop(sig)
    if sig == signal.SIGTERM:
        assert code == 0
    # the proxy workers notice their main process is gone and exit
    wait_for(lambda: not worker_processes(gw.home), timeout=20)
    for name, sandbox in made.items():
        assert runtime_processes(sandbox.id), f"{name} died with the gateway"
        probe = gap_probe(argv[name], topology)
        assert probe == {"name": "6", "direct": "7"}, (name, probe)  # unresolved; refused
    during_gap()
    start(gw)
    rows = adopted_rows(gw, last)
    with diagnosed(gw):
        after_restart(gw, topology, made, before, rows)


@contextlib.contextmanager
def diagnosed(gw: Gateway) -> Iterator[None]:
    """A failure says what the gateway and the runtimes logged."""
    try:
        yield
    except (AssertionError, SandgateAPIError) as e:
        logs = [gw.home / "serve.log", *gw.home.glob("sandboxes/*/*.log")]
        tails = "\n".join(f"--- {p}\n" + "\n".join(p.read_text(errors="replace")
                                                    .splitlines()[-15:]) for p in logs)
        raise AssertionError(f"{e}\n{tails}") from e


def after_restart(gw: Gateway, topology: Topology, made: dict[str, Sandbox],
                  before: dict[str, Any], rows: dict[str, dict[str, Any]]) -> None:
    for name, sandbox in made.items():
        (alive, data, ticks), placeholder = before[name]
        assert data == "kept", name
        now_alive, now_data, now_ticks = status(sandbox)
        assert (now_alive, now_data) == (alive, data), name   # the same process, its file
        assert now_ticks > ticks, name                          # still ticking
        assert allowed_call(sandbox, topology) == placeholder, name
        assert rows[sandbox.id]["reason"] == "sandbox_adopted"
        assert named_as_its_process(gw, sandbox), name


def test_sandboxes_survive_a_clean_stop(gw: Gateway, topology: Topology,
                                        sandboxes: dict[str, Sandbox]) -> None:
    for sandbox in sandboxes.values():
        sh(sandbox, START)
    started = time.time()   # after the creates and START: only later activity is newer

    def during_gap() -> None:
        # the microVM's namespace name left as an empty mount point, as a restarted systemd
        # unit's fresh mount namespace sees it: named again from its QEMU process
        subprocess.run(["umount", f"/run/netns/{gw.prefix}-{sandboxes['microvm'].id}"],
                       check=True)
        for name, sandbox in sandboxes.items():   # written at the clean stop
            assert last_active(gw, sandbox) > started, name

    survives(gw, topology, sandboxes, signal.SIGTERM, during_gap)
    assert f"table sandgate_{gw.prefix}" in leftovers(gw.prefix)


def test_sandboxes_survive_kill_9_and_an_inconsistent_one_is_destroyed(
        gw: Gateway, topology: Topology, admin: Client,
        sandboxes: dict[str, Sandbox]) -> None:
    doomed = admin.create("restart", ttl_seconds=600)

    def during_gap() -> None:
        for line in runtime_processes(doomed.id):
            if "runsc" in line:   # a gVisor sandbox: its sandbox, gofer and runsc processes
                subprocess.run(["kill", "-9", line.split()[0]], check=False)
        # the gVisor sandbox's namespace loses its name (a bind mount), as in the fresh mount
        # namespace of a restarted systemd unit: named again from its runsc process
        subprocess.run(["ip", "netns", "del", f"{gw.prefix}-{sandboxes['gvisor'].id}"],
                       check=True)

    last = gw.last_audit_id()
    survives(gw, topology, sandboxes, signal.SIGKILL, during_gap)
    row = adopted_rows(gw, last)[doomed.id]
    assert (row["decision"], row["reason"]) == ("deny", "sandbox_reconciled")
    assert "runsc" in row["error"], row
    with pytest.raises(SandgateAPIError) as gone:
        doomed.refresh()
    assert gone.value.status == 404
    assert f"netns {gw.prefix}-{doomed.id}" not in leftovers(gw.prefix)
    assert runtime_processes(doomed.id) == []
    assert f"netns {gw.prefix}-{sandboxes['gvisor'].id}" in leftovers(gw.prefix)


def test_destroying_on_stop_leaves_nothing(gw: Gateway, sandboxes: dict[str, Sandbox]) -> None:
    gw.extra_env["SANDGATE_DESTROY_ON_STOP"] = "1"
    gw.stop()
    start(gw)   # the sandboxes are adopted once more, then destroyed by the stop
    assert gw.stop() == 0
    assert leftovers(gw.prefix) == []
    assert all(runtime_processes(s.id) == [] for s in sandboxes.values())
    records = Path(gw.home / "sandboxes")
    assert not records.exists() or not any(records.iterdir())
