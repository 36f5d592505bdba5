"""The control API over real HTTP, through the Python client, as platforms drive it: roles,
validation, and the whole sandbox lifecycle."""

from __future__ import annotations

import secrets
import subprocess
import time
from collections.abc import Iterator
from datetime import datetime

import httpx
import pytest

from gateway.client import Client, SandgateAPIError
from tests.harness import Gateway, status_of
from tests.topology import Topology

pytestmark = pytest.mark.integration

POLICY = """version: 1
name: api-web
rules:
  - id: www
    hosts: [www.upstream.test]
    ports: [80]
"""


@pytest.fixture(scope="module")
def tokens(gateway: Gateway) -> dict[str, str]:
    return {role: gateway.token(role, f"{role}-{secrets.token_hex(3)}")
            for role in ("admin", "security", "operator", "auditor")}


@pytest.fixture(scope="module")
def clients(gateway: Gateway, tokens: dict[str, str]) -> Iterator[dict[str, Client]]:
    made = {role: Client(gateway.api_url, token) for role, token in tokens.items()}
    made["second-operator"] = Client(gateway.api_url, gateway.token("operator", "op2"))
    made["security"].put_policy("api-web", POLICY)
    yield made
    for client in made.values():
        client.close()


def test_health_needs_no_token(gateway: Gateway) -> None:
    assert httpx.get(f"{gateway.api_url}/healthz").json() == {"status": "ok"}
    assert httpx.get(f"{gateway.api_url}/readyz").json() == {"status": "ready",
                                                             "warm_sandboxes": 0}
    assert "sandgate control API" in httpx.get(f"{gateway.api_url}/docs").text


def test_missing_bad_and_wrong_tokens(gateway: Gateway,
                                      clients: dict[str, Client]) -> None:
    anonymous = httpx.get(f"{gateway.api_url}/v1/sandboxes")
    assert anonymous.status_code == 401 and "bearer token" in anonymous.json()["detail"]
    forged = httpx.get(f"{gateway.api_url}/v1/sandboxes",
                       headers={"authorization": "Bearer sgt_abcdefghij_" + "x" * 43})
    assert forged.status_code == 401
    with pytest.raises(SandgateAPIError) as denied:
        clients["auditor"].create(policy="api-web")
    assert denied.value.status == 403 and "role auditor may not use sandboxes" in \
        denied.value.detail
    assert status_of(lambda: clients["operator"].put_policy("x", POLICY)) == 403
    assert status_of(lambda: clients["operator"].put_secret("X", "v")) == 403
    assert status_of(lambda: list(clients["auditor"].audit(limit=1))) == 200


def test_invalid_bodies_get_field_errors(gateway: Gateway, tokens: dict[str, str]) -> None:
    headers = {"authorization": f"Bearer {tokens['admin']}"}
    response = httpx.post(f"{gateway.api_url}/v1/sandboxes", headers=headers,
                          json={"policy": "", "ttl_seconds": -5, "runtime": "docker",
                                "surprise": 1})
    assert response.status_code == 422
    fields = {f["field"] for f in response.json()["fields"]}
    assert {"body.policy", "body.ttl_seconds", "body.runtime", "body.surprise"} <= fields
    bad_policy = httpx.put(f"{gateway.api_url}/v1/policies/broken", headers=headers,
                           json={"yaml": "version: 1\nname: broken\nrules:\n  - id: a\n"
                                         "    hostz: [a.test]\n"})
    assert bad_policy.status_code == 422
    assert "broken.yaml:5:5: rule a: unknown key 'hostz'" in bad_policy.json()["detail"]


def test_policy_endpoints(clients: dict[str, Client]) -> None:
    security = clients["security"]
    assert security.test_policy("api-web", "GET", "http://www.upstream.test/")["decision"] == \
        "allow"
    other = security.test_policy("api-web", "GET", "http://other.upstream.test/")
    assert other["reason"] == "no_matching_rule"
    assert other["steps"] == ["dns: other.upstream.test gets NXDOMAIN (no rule names it); the "
                              "sandbox never connects"]
    names = {p["name"] for p in security.request("GET", "/v1/policies")}
    assert "api-web" in names
    assert security.request("GET", "/v1/policies/api-web")["yaml"] == POLICY
    security.put_policy("api-temp", POLICY.replace("api-web", "api-temp"))
    security.request("DELETE", "/v1/policies/api-temp")
    assert status_of(lambda: security.request("GET", "/v1/policies/api-temp")) == 404


def test_lifecycle(clients: dict[str, Client], topology: Topology) -> None:
    operator = clients["operator"]
    clients["security"].put_secret("API_LIFECYCLE", "lifecycle-secret-value")
    mark = topology.mark()
    with operator.create(policy="api-web", secrets=["API_LIFECYCLE"], env={"GREETING": "hi"},
                         ttl_seconds=600, memory_mb=256, max_pids=64) as sandbox:
        assert sandbox.info["state"] == "running" and sandbox.info["memory_mb"] == 256
        echo = sandbox.exec(["/bin/sh", "-c", 'echo "$GREETING"; echo err >&2; exit 3'])
        assert (echo.exit_code, echo.stdout, echo.stderr) == (3, "hi\n", "err\n")
        assert sandbox.exec(["cat"], stdin="from stdin").stdout == "from stdin"
        placeholder = sandbox.exec(["/bin/sh", "-c", 'printf %s "$API_LIFECYCLE"']).stdout
        assert placeholder.startswith("sgp_")
        slow = sandbox.exec(["sleep", "30"], timeout=1)
        assert slow.timed_out and slow.exit_code == 124

        events = list(sandbox.exec_stream(["/bin/sh", "-c", "echo one; sleep 0.2; echo two"]))
        assert b"".join(d for kind, d in events if kind == "stdout") == b"one\ntwo\n"
        assert events[-1] == ("exit", 0)

        sandbox.upload("/tmp/work/../data.bin", bytes(range(256)) * 4)
        assert sandbox.download("/tmp/data.bin") == bytes(range(256)) * 4
        assert {"name": "data.bin", "type": "file", "size": 1024} in sandbox.files("/tmp")
        assert status_of(lambda: sandbox.download("/tmp/missing")) == 404
        assert status_of(lambda: sandbox.upload("/etc/passwd", b"x")) == 422

        fetched = sandbox.exec(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}",
                                "http://www.upstream.test/api-lifecycle"])
        assert fetched.stdout == "200"
        rows = list(sandbox.audit(decision="allow"))
        assert any(r["path"] == "/api-lifecycle" and r["owner"] for r in rows)
        assert {r["sandbox_id"] for r in rows} == {sandbox.id}

        other = clients["second-operator"]
        assert status_of(lambda: other.sandbox(sandbox.id)) == 403
        assert status_of(lambda: list(other.audit(sandbox=sandbox.id))) == 200
        assert list(other.audit(sandbox=sandbox.id)) == []   # operators see their own rows
        assert sandbox.id in {s["id"] for s in operator.sandboxes()}
        assert sandbox.id not in {s["id"] for s in other.sandboxes()}
    assert status_of(lambda: operator.sandbox(sandbox.id)) == 404
    assert [e["path"] for e in topology.events(mark, "http")] == ["/api-lifecycle"]


def runsc_processes(sandbox_id: str) -> list[str]:
    ps = subprocess.run(["ps", "-eww", "-o", "args"], capture_output=True, text=True).stdout
    return [line for line in ps.splitlines() if "runsc" in line and sandbox_id in line]


def test_ttl_kills_a_sleeping_sandbox_on_time(clients: dict[str, Client]) -> None:
    sandbox = clients["admin"].create(policy="api-web", ttl_seconds=2)
    expires = datetime.fromisoformat(sandbox.info["expires_at"]).timestamp()
    assert runsc_processes(sandbox.id)
    deadline = time.monotonic() + 10
    while runsc_processes(sandbox.id) and time.monotonic() < deadline:
        time.sleep(0.05)
    killed_at = time.time()
    assert not runsc_processes(sandbox.id)
    assert killed_at - expires < 1.0, f"killed {killed_at - expires:.2f} s after the deadline"
    while status_of(sandbox.refresh) != 404 and time.monotonic() < deadline:
        time.sleep(0.05)  # the rest of the teardown (links, slot) follows the kill
    assert status_of(sandbox.refresh) == 404


def test_limits_hold(clients: dict[str, Client]) -> None:
    with clients["admin"].create(policy="api-web", max_pids=16, memory_mb=128) as sandbox:
        forks = sandbox.exec(["/usr/bin/python3", "-c", """
import os, time
made = 0
try:
    for _ in range(300):
        if os.fork() == 0:
            time.sleep(20); os._exit(0)
        made += 1
except OSError:
    pass
print(made)
"""], timeout=60)
        assert int(forks.stdout.strip() or 0) < 300, forks
        hog = sandbox.exec(["/usr/bin/python3", "-c",
                            "b = bytearray(1024 * 1024 * 1024); print('allocated', len(b))"],
                           timeout=60)
        assert "allocated" not in hog.stdout and hog.exit_code != 0
