"""Ready means ready: a sandbox created the moment `/healthz` answers (before the proxy
workers listen) makes its first allowed HTTPS call at once, 20 starts in a row. The create
waits for every worker, or the client retries the 503 it gets."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.client import Client
from tests.conftest import force_clean, kill_runsc, new_prefix
from tests.harness import Gateway
from tests.topology import Topology

pytestmark = pytest.mark.integration

ROUNDS = 20
CALL = ["curl", "-sS", "--max-time", "10", "-o", "/dev/null", "-w", "%{http_code}",
        "https://secure.upstream.test/hello"]


def test_create_right_after_healthz_makes_an_allowed_call_at_once(
        tmp_path: Path, topology: Topology) -> None:
    gw = Gateway(new_prefix(), tmp_path / "gw", topology)
    policy = gw.policy("ready", [{"id": "secure", "hosts": ["secure.upstream.test"]}])
    outcomes = []
    try:
        for _ in range(ROUNDS):
            gw.launch()
            gw.wait_until(gw.alive)
            with Client(uds=str(gw.home / "control.sock"), retry_deadline=60) as client:
                sandbox = client.create(str(policy))
                result = sandbox.exec(CALL)
                sandbox.delete()
            outcomes.append((result.stdout, result.stderr.strip()))
            assert gw.stop() == 0, gw.log_tail()
    finally:
        gw.stop()
        kill_runsc(gw.home)
        force_clean(gw.prefix)
    assert outcomes == [("200", "")] * ROUNDS, outcomes
