"""The warm pool: gVisor sandboxes started ahead and claimed by create calls with the default
limits. Until claimed a warm sandbox belongs to nobody, so the gateway refuses its egress."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import force_clean, kill_runsc, leftovers, new_prefix
from tests.harness import Gateway
from tests.topology import HTTP_IP, Topology

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def warm_gateway(tmp_path_factory: pytest.TempPathFactory,
                 topology: Topology) -> Iterator[Gateway]:
    gw = Gateway(new_prefix(), tmp_path_factory.mktemp("warm"), topology)
    gw.extra_env["SANDGATE_WARM_POOL"] = "1"
    try:
        gw.start()
        yield gw
    finally:
        gw.stop()
        remaining = leftovers(gw.prefix)
        kill_runsc(gw.home)
        force_clean(gw.prefix)
        assert not remaining, f"warm pool left {remaining} behind"


def waiting_ids(gw: Gateway, timeout: float = 30) -> set[str]:
    """Ids of started sandboxes the API does not list (the warm ones), once there are any."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with gw.client() as c:
            listed = {s["id"] for s in c.get("/v1/sandboxes").json()}
        started = {p.name for p in (gw.home / "sandboxes").iterdir()} - listed
        ready = {i for i in started if any((gw.home / "runsc").glob(f"{i}_sandbox:*.state"))}
        if ready:
            return ready
        time.sleep(0.05)
    raise AssertionError(f"no warm sandbox: {gw.log_tail()}")


def create(gw: Gateway, policy: Path, **body: object) -> dict[str, str]:
    with gw.client() as c:
        response = c.post("/v1/sandboxes", json={"policy": str(policy), **body})
        assert response.status_code == 201, response.text
        return dict(response.json())


def exec_in(gw: Gateway, sandbox_id: str, cmd: list[str]) -> dict[str, object]:
    with gw.client() as c:
        response = c.post(f"/v1/sandboxes/{sandbox_id}/exec", json={"cmd": cmd})
        assert response.status_code == 200, response.text
        return dict(response.json())


def test_create_claims_the_warm_sandbox_and_its_policy_applies(warm_gateway: Gateway) -> None:
    gw = warm_gateway
    gw.set_secret("WARM_TOKEN", "warm-real-value")
    policy = gw.policy("warm", [{"id": "web", "hosts": ["www.upstream.test"]}])
    (warm,) = waiting_ids(gw)
    with gw.client() as c:
        response = c.post("/v1/sandboxes", json={"policy": str(policy),
                                                 "secrets": ["WARM_TOKEN"],
                                                 "env": {"GREETING": "hi"}})
    assert response.status_code == 201, response.text
    sandbox = response.json()
    assert sandbox["id"] == warm
    out = exec_in(gw, warm, ["/bin/sh", "-c",
                             "echo $GREETING $WARM_TOKEN; curl -sS --max-time 10 -o /dev/null "
                             "-w '%{http_code} ' http://www.upstream.test/; curl -sS "
                             "--max-time 10 http://other.upstream.test/ || echo refused"])
    greeting, placeholder, allowed, refused = str(out["stdout"]).split()
    assert (greeting, allowed, refused) == ("hi", "200", "refused")
    assert placeholder.startswith("sgp_")
    # the pool refills with a new sandbox
    assert warm not in waiting_ids(gw)


def test_other_limits_get_a_cold_sandbox(warm_gateway: Gateway) -> None:
    policy = warm_gateway.policy("warm-none", [])
    waiting = waiting_ids(warm_gateway)
    sandbox = create(warm_gateway, policy, memory_mb=256)
    assert sandbox["id"] not in waiting
    assert waiting_ids(warm_gateway) == waiting


def test_an_unclaimed_sandbox_gets_nothing_out(warm_gateway: Gateway,
                                               topology: Topology) -> None:
    (warm,) = waiting_ids(warm_gateway)
    mark, last = topology.mark(), warm_gateway.last_audit_id()
    netns = f"/run/netns/{warm_gateway.prefix}-{warm}"
    probe = subprocess.run(["nsenter", f"--net={netns}", "curl", "-sS", "--max-time", "5",
                            "-H", "Host: www.upstream.test", f"http://{HTTP_IP}/"],
                           capture_output=True, text=True, timeout=30)
    assert probe.returncode != 0
    assert topology.events(mark, "http") == []
    rows = warm_gateway.audit_rows(last)
    assert [r["reason"] for r in rows if r["sandbox_id"] is None] == ["unknown_sandbox"]
