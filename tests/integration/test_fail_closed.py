"""Fail closed: with the gateway dead a sandbox loses egress and never gains direct egress;
stopping or restarting the gateway leaves nothing behind."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import killed_after, leftovers
from tests.harness import Gateway, worker_processes
from tests.topology import HTTP_IP, UDP_IP, Topology

pytestmark = pytest.mark.integration

PROBE = f"""
import json, socket, sys, urllib.request
out = {{}}
try:
    out["resolved"] = socket.gethostbyname("www.upstream.test")
except OSError as e:
    out["resolved"] = type(e).__name__
for label, host in (("synthetic", sys.argv[1]), ("direct", "{HTTP_IP}")):
    try:
        request = urllib.request.Request(f"http://{{host}}/probe",
                                         headers={{"Host": "www.upstream.test"}})
        urllib.request.urlopen(request, timeout=5).read()
        out[label] = "reached"
    except Exception as e:
        out[label] = type(e).__name__ + ":" + str(getattr(e, "code", ""))
socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"x", ("{UDP_IP}", 9999))
print(json.dumps(out))
"""


@pytest.fixture
def own_gateway(tmp_path: Path, topology: Topology) -> Iterator[Gateway]:
    with killed_after(tmp_path / "gw", topology) as gw:
        yield gw


def create(gw: Gateway, policy: Path, runtime: str = "gvisor") -> dict[str, str]:
    with gw.client() as c:
        response = c.post("/v1/sandboxes", json={"policy": str(policy), "runtime": runtime})
        assert response.status_code == 201, response.text
        return dict(response.json())


def probe_command(gw: Gateway, sandbox_id: str, synthetic: str) -> list[str]:
    """The host command that runs the probe in the sandbox; it works without the gateway."""
    with gw.client() as c:
        response = c.post(f"/v1/sandboxes/{sandbox_id}/local-exec",
                          json={"cmd": ["/usr/bin/python3", "-c", PROBE, synthetic]})
        return list(response.json()["argv"])


def probe(argv: list[str]) -> dict[str, str]:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout))


def runsc_processes(sandbox_id: str) -> list[str]:
    """The host processes of a sandbox: runsc's, or QEMU's for a microVM."""
    ps = subprocess.run(["ps", "-eww", "-o", "args"], capture_output=True, text=True).stdout
    return [line for line in ps.splitlines()
            if ("runsc" in line or "qemu-system" in line) and sandbox_id in line]


def test_killed_gateway_means_no_egress_and_restart_cleans_up(
        own_gateway: Gateway, topology: Topology) -> None:
    gw = own_gateway
    gw.start()
    policy = gw.policy("www", [{"id": "www", "hosts": ["www.upstream.test"], "ports": [80]}])
    sandbox = create(gw, policy)
    vm = create(gw, policy, "microvm")  # killed with the gateway too; must not linger
    synthetic = probe(probe_command(gw, sandbox["id"], "0.0.0.0"))["resolved"]
    assert synthetic.startswith("198.18.")
    argv = probe_command(gw, sandbox["id"], synthetic)
    before = probe(argv)
    assert before["synthetic"] == "reached"          # the path works through the gateway
    assert before["direct"] == "HTTPError:403"        # and an IP literal is refused by it
    assert runsc_processes(sandbox["id"])

    assert len(worker_processes(gw.home)) == 2
    gw.stop(signal.SIGKILL)
    # the proxy workers notice their main process is gone and exit: none keeps a replica
    deadline = time.monotonic() + 10
    while worker_processes(gw.home):
        assert time.monotonic() < deadline, "proxy workers outlived the gateway"
        time.sleep(0.05)
    mark = topology.mark()
    after = probe(argv)
    assert after["resolved"] == "gaierror"            # no DNS without the gateway
    assert not after["synthetic"].startswith("reached")
    assert not after["direct"].startswith("reached")  # and no direct way out either
    assert topology.events(mark) == []
    assert f"table sandgate_{gw.prefix}" in leftovers(gw.prefix)  # rules outlive the gateway

    gw.start()  # adopts what the killed gateway left; this stop (destroy on stop) removes it
    assert gw.sandgate("audit", "--json").returncode == 0
    gw.stop()
    assert leftovers(gw.prefix) == []
    assert runsc_processes(sandbox["id"]) == []
    assert runsc_processes(vm["id"]) == []


def test_stopping_the_gateway_removes_every_sandbox(own_gateway: Gateway) -> None:
    gw = own_gateway
    gw.start()
    policy = gw.policy("none", [])
    ids = [create(gw, policy)["id"] for _ in range(2)]
    names = leftovers(gw.prefix)
    for sandbox_id in ids:
        assert f"netns {gw.prefix}-{sandbox_id}" in names
        assert runsc_processes(sandbox_id)
    assert gw.stop() == 0
    assert worker_processes(gw.home) == []
    assert leftovers(gw.prefix) == []
    assert all(runsc_processes(i) == [] for i in ids)
    assert not (gw.home / "sandboxes").exists() or not any((gw.home / "sandboxes").iterdir())
