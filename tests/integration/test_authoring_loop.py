"""The policy authoring loop end to end, from real gVisor sandboxes through the session's
gateway: `sandgate run --learn` records a script that calls several test upstreams under a
monitor-mode policy and learns a policy; enforced, that policy lets the same script pass
and refuses a new host and a new method; `policy replay` of it over the recording finds no
new denial, and of a narrowed copy exactly the removed request (CLI and API).

Two sandboxes in all: the recording run and the enforced run (which also probes)."""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from gateway.client import Client
from tests.harness import Gateway

pytestmark = pytest.mark.integration

SECRET = "LEARN_TOKEN"
# The calls the agent's task needs; with the argument `probe`, also a new host and a new
# method, whose outcomes it prints instead of failing.
SCRIPT = r"""
import json, os, socket, sys, urllib.error, urllib.request

def call(method, url, headers=None, data=None):
    request = urllib.request.Request(url, method=method, headers=headers or {}, data=data)
    try:
        with urllib.request.urlopen(request, timeout=20) as answer:
            return answer.status
    except urllib.error.HTTPError as e:
        return e.code
    except urllib.error.URLError as e:
        return type(e.reason).__name__

statuses = [
    call("GET", "https://secure.upstream.test/api/items/1"),
    call("GET", "https://secure.upstream.test/api/items/2"),
    call("POST", "https://secure.upstream.test/api/items", data=b"{}"),
    call("GET", "https://secure.upstream.test/whoami",
         {"Authorization": "Bearer " + os.environ["LEARN_TOKEN"]}),
    call("GET", "http://www.upstream.test/index.html"),
]
with socket.create_connection(("echo.upstream.test", 7), timeout=10) as s:
    s.sendall(b"ping")
    echoed = s.recv(4)
assert statuses == [200] * 5 and echoed == b"ping", (statuses, echoed)
if sys.argv[1:] == ["probe"]:
    print(json.dumps({"new_method": call("DELETE", "https://secure.upstream.test/api/items/1"),
                      "new_host": call("GET", "https://other.upstream.test/")}))
print("task done")
"""


@dataclass
class Recording:
    sandbox: str
    learned: Path          # `run --learn`: from the starting policy
    learned_text: str


def run(gateway: Gateway, *flags: str, probe: bool = False) -> Any:
    return gateway.sandgate("run", *flags, f"--secret={SECRET}", "--", "/usr/bin/python3",
                            "-c", SCRIPT, *(["probe"] if probe else []), timeout=180)


@pytest.fixture(scope="module")
def recording(gateway: Gateway, tmp_path_factory: pytest.TempPathFactory) -> Recording:
    gateway.set_secret(SECRET, "learn-real-" + secrets.token_hex(12))
    gateway.policy("learnbase", [{
        "id": "whoami", "hosts": ["secure.upstream.test"], "paths": ["/whoami"],
        "inject": [{"secret": SECRET, "as": "bearer"}]}])
    learned = tmp_path_factory.mktemp("learn") / "learned.yaml"
    result = run(gateway, "--learn", f"--learn-to={learned}", "--policy=learnbase")
    assert result.returncode == 0, result.stderr
    assert "task done" in result.stdout
    text = learned.read_text()
    found = re.search(r"sandgate run --learn, sandbox (\S+),", text)
    assert found, text
    return Recording(found[1], learned, text)


def rules_by_host(text: str) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = {}
    for rule in yaml.safe_load(text)["rules"]:
        found.setdefault(rule["hosts"][0], []).append(rule)
    return found


def test_run_learn_writes_a_policy_that_passes_check(gateway: Gateway,
                                                     recording: Recording) -> None:
    rules = rules_by_host(recording.learned_text)
    secure = {r["id"]: r for r in rules["secure.upstream.test"]}
    assert secure["whoami"]["inject"] == [{"secret": SECRET, "as": "bearer"}]  # kept
    assert (secure["secure.upstream.test:get"]["methods"],
            secure["secure.upstream.test:get"]["paths"]) == (["GET"], ["/api/items/*"])
    assert secure["secure.upstream.test:post"]["paths"] == ["/api/items"]
    assert "#   /api/items/*: e.g. /api/items/1, /api/items/2" in recording.learned_text
    assert rules["www.upstream.test"][0]["protocols"] == ["http"]
    assert rules["echo.upstream.test"][0] == {"id": "echo.upstream.test:tcp",
                                              "hosts": ["echo.upstream.test"], "ports": [7],
                                              "protocols": ["tcp"]}
    assert re.search(r"# 2 requests, first \S+Z, last \S+Z\n  #   /api/items/\*",
                     recording.learned_text)
    check = gateway.sandgate("policy", "check", "--strict", str(recording.learned))
    assert check.returncode == 0, check.stdout + check.stderr


def test_the_learned_policy_enforced_passes_the_task_and_refuses_what_is_new(
        gateway: Gateway, recording: Recording) -> None:
    result = run(gateway, f"--policy={recording.learned}", probe=True)
    assert result.returncode == 0, result.stderr
    probes = json.loads(result.stdout.splitlines()[0])
    assert probes == {"new_method": 403, "new_host": "gaierror"}   # never resolved


def test_learn_binds_the_secret_the_recording_rule_injected(gateway: Gateway,
                                                            recording: Recording) -> None:
    # without --from: the rows name the recording policy, whose rule gives the form
    result = gateway.sandgate("policy", "learn", f"--sandbox={recording.sandbox}")
    assert result.returncode == 0, result.stderr
    secure = rules_by_host(result.stdout)["secure.upstream.test"]
    bound = [r for r in secure if "inject" in r]
    assert [(r["paths"], r["inject"]) for r in bound] == \
        [(["/whoami"], [{"secret": SECRET, "as": "bearer"}])]   # only where it was used
    assert "5 rule(s) from 6 request(s)" in result.stderr


def narrowed(recording: Recording) -> str:
    """The learned policy without the rule that allowed POST /api/items."""
    data = yaml.safe_load(recording.learned_text)
    data["rules"] = [r for r in data["rules"] if r["id"] != "secure.upstream.test:post"]
    return yaml.safe_dump(data, sort_keys=False)


def test_replay_finds_nothing_new_then_exactly_the_narrowed_request(
        gateway: Gateway, recording: Recording, tmp_path: Path) -> None:
    scope = [f"--sandbox={recording.sandbox}", "--since=1h"]
    same = gateway.sandgate("policy", "replay", str(recording.learned), *scope, "--json")
    assert same.returncode == 0, same.stderr
    report = json.loads(same.stdout)
    assert (report["replayed"], report["newly_denied"], report["newly_allowed"]) == (6, [], [])

    candidate = tmp_path / "narrowed.yaml"
    candidate.write_text(narrowed(recording))
    less = gateway.sandgate("policy", "replay", str(candidate), *scope)
    assert less.returncode == 1, less.stderr
    assert less.stdout.splitlines()[1:] == [
        "newly denied:",
        "      1  secure.upstream.test  rule=-  reason=no_matching_rule  (was no rule)",
        "         POST /api/items"]


def test_replay_through_the_api_needs_policies_and_audit(gateway: Gateway,
                                                         recording: Recording) -> None:
    with Client(gateway.api_url, gateway.token("security", "learn-security")) as security:
        report = security.replay_policy("narrowed", since="1h", sandboxes=[recording.sandbox],
                                        yaml=narrowed(recording))
        stored = security.replay_policy("learnbase", since="1h", sandboxes=[recording.sandbox])
    assert report["newly_denied_count"] == 1 and report["truncated"] is False
    assert report["newly_denied"][0]["samples"] == ["POST /api/items"]
    # the recording's own policy, enforced: what monitor mode let through that it denies
    assert stored["newly_denied_count"] == 5 and stored["unchanged"] == 1
    auditor = {"authorization": f"Bearer {gateway.token('auditor', 'learn-auditor')}"}
    with httpx.Client(base_url=gateway.api_url, headers=auditor, timeout=60) as http:
        refused = http.post("/v1/policies/learnbase/replay", json={})
    assert refused.status_code == 403 and "may not use policies" in refused.json()["detail"]
