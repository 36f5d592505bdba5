"""Hot reload with a running sandbox: a valid edit decides its next request; an invalid edit
is rejected, the last good version keeps deciding, and `policy status` shows the error."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.harness import Gateway, wait_for
from tests.topology import Topology

pytestmark = pytest.mark.integration

ALLOW = """version: 1
name: reload
rules:
  - id: www
    hosts: [www.upstream.test]
    ports: [80]
"""
DENY_PATH = ALLOW + """  - id: no-private
    action: deny
    hosts: [www.upstream.test]
    paths: ["/private/**"]
"""
BROKEN = ALLOW + "  - id: oops\n    hostz: [x.test]\n"
BOMB = (Path(__file__).parents[1] / "policies" / "testdata" / "alias_bomb.yaml").read_text()


def status(gateway: Gateway) -> tuple[int, dict[str, Any]]:
    result = gateway.sandgate("policy", "status")
    with gateway.client() as c:
        report = c.get("/v1/policies/status").json()
    return result.returncode, {"text": result.stdout, **report}




def active(gateway: Gateway, path: Path) -> dict[str, Any]:
    _, report = status(gateway)
    return next(h for h in report["active"] if h["source"] == str(path))


def fetcher(gateway: Gateway, path: Path) -> tuple[dict[str, Any], Any]:
    """A sandbox on the policy file `path`, and a function fetching a URL from it."""
    with gateway.client() as c:
        sandbox = c.post("/v1/sandboxes", json={"policy": str(path)}).json()
        argv = c.post(f"/v1/sandboxes/{sandbox['id']}/local-exec", json={"cmd": [
            "curl", "-sS", "--max-time", "10", "-w", "\n%{http_code}",
            "http://www.upstream.test/private/x"]}).json()["argv"]

    def fetch() -> tuple[str, str]:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=60).stdout
        body, code = out.rsplit("\n", 1)
        return code, body

    return sandbox, fetch


def test_edit_applies_to_the_running_sandbox(gateway: Gateway, topology: Topology) -> None:
    path = gateway.policy_dir / "reload.yaml"
    path.write_text(ALLOW)
    sandbox, fetch = fetcher(gateway, path)

    try:
        assert fetch()[0] == "200"
        first = active(gateway, path)["version"]

        path.write_text(BROKEN)
        rejected = wait_for(lambda: active(gateway, path)["error"], timeout=10)
        assert f"{path}:8:5: rule oops: unknown key 'hostz'" in rejected
        assert fetch()[0] == "200"                 # the last good version still decides
        code, report = status(gateway)
        assert code == 1 and "REJECTED CHANGE" in report["text"]
        assert active(gateway, path)["version"] == first

        path.write_text(DENY_PATH)
        wait_for(lambda: active(gateway, path)["version"] != first, timeout=10)
        assert active(gateway, path)["error"] is None
        code, body = fetch()
        assert code == "403"
        assert json.loads(body)["rule"] == "no-private"
    finally:
        with gateway.client() as c:
            c.delete(f"/v1/sandboxes/{sandbox['id']}")
        path.unlink()


def test_an_alias_bomb_changes_nothing_and_the_gateway_keeps_serving(
        gateway: Gateway, topology: Topology) -> None:
    path = gateway.policy_dir / "bombed.yaml"
    path.write_text(ALLOW.replace("name: reload", "name: bombed"))
    sandbox, fetch = fetcher(gateway, path)
    try:
        assert fetch()[0] == "200"
        first = active(gateway, path)["version"]
        # through the API: refused at once, nothing written
        with gateway.client() as c:
            put = c.put("/v1/policies/bomb", json={"yaml": BOMB})
        assert put.status_code == 422, put.text
        assert "bomb.yaml:2:7: YAML anchors (&a) are not allowed" in put.json()["detail"]
        assert not (gateway.policy_dir / "bomb.yaml").exists()
        # through hot reload: rejected, the last good version keeps deciding
        path.write_text(BOMB)
        rejected = wait_for(lambda: active(gateway, path)["error"], timeout=10)
        assert f"{path}:2:7: YAML anchors (&a) are not allowed" in rejected
        assert fetch()[0] == "200"
        assert active(gateway, path)["version"] == first
        with gateway.client() as c:
            assert c.get("/readyz").status_code == 200
        # through the CLI on the file
        check = gateway.sandgate("policy", "check", str(path))
        assert check.returncode == 1 and "YAML anchors (&a) are not allowed" in check.stdout
    finally:
        with gateway.client() as c:
            c.delete(f"/v1/sandboxes/{sandbox['id']}")
        path.unlink()
