"""`sandgate selftest --policy FILE`: a sound policy passes every check, and the self-test
fails where a deployment lets something out: a policy in monitor mode, a rule opening the
metadata address. It leaves nothing behind."""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.conftest import leftovers
from tests.harness import REPO, SANDGATE

pytestmark = pytest.mark.integration

CHECKS = ["allowed", "credentials", "unlisted name", "dns elsewhere", "ip literal",
          "private address", "host fronting", "raw tcp", "udp", "ipv6", "ssrf by name",
          "sandbox"]


def selftest(policy: Path) -> tuple[int, list[tuple[str, str, str]], str]:
    # its work directory (kept when a check fails, as some here must) is removed with this
    # one (short: the gateway's unix sockets live under it)
    with tempfile.TemporaryDirectory(prefix="sgst-") as tmp:
        result = subprocess.run([*SANDGATE, "selftest", "--policy", str(policy)], cwd=REPO,
                                capture_output=True, text=True, timeout=300, check=False,
                                env={**os.environ, "TMPDIR": tmp})
    lines = re.findall(r"^(PASS|FAIL)  (.{16}) (.*)$", result.stdout, re.MULTILINE)
    prefix = re.search(r"namespaces (\w+)-host", result.stdout)
    assert prefix, result.stdout + result.stderr
    assert leftovers(prefix.group(1)) == []
    return result.returncode, [(v, c.strip(), d) for v, c, d in lines], result.stdout


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    return path


SOUND = """
version: 1
name: sound
rules:
  - id: api
    hosts: [api.example.org]
    ports: [443]
    inject: [{secret: API_TOKEN, as: bearer}]
  - id: mirror
    hosts: ["*.mirror.example.net"]
    methods: [GET]
    paths: ["/simple/**"]
    ports: [80]
  - id: db
    hosts: [db.example.org]
    ports: [5432]
    protocols: [tcp]
"""


def test_sound_policy_passes_every_check(tmp_path: Path) -> None:
    code, lines, stdout = selftest(write(tmp_path, SOUND))
    assert code == 0, lines
    assert {c for v, c, _ in lines if v == "PASS"} == set(CHECKS)
    assert not [line for line in lines if line[0] == "FAIL"]
    allowed = [d for v, c, d in lines if c == "allowed"]
    assert allowed == ["rule api: GET https://api.example.org:443/sandgate-selftest",
                       "rule mirror: GET http://sandgate-selftest.mirror.example.net:80"
                       "/simple/sandgate-selftest"]
    assert ("SKIP  rule db: no HTTP(S) port the self-test serves (it has web servers on 80, "
            "8080, 443, 8443)") in stdout.splitlines()
    # which store a gateway with this environment verifies upstreams against
    trust = next(line for line in stdout.splitlines() if line.startswith("upstream trust: "))
    assert "(distribution)" in trust or "(SSL_CERT_FILE)" in trust, trust


def test_example_policy_passes(tmp_path: Path) -> None:
    code, lines, _ = selftest(REPO / "policies/examples/coding-agent.yaml")
    assert code == 0, lines
    assert len([c for v, c, _ in lines if v == "PASS" and c == "allowed"]) == 5


def test_monitor_mode_fails_the_refusal_checks(tmp_path: Path) -> None:
    code, lines, _ = selftest(write(tmp_path, SOUND.replace("rules:", "mode: monitor\nrules:")))
    assert code == 1
    failed = {c for v, c, _ in lines if v == "FAIL"}
    assert {"unlisted name", "raw tcp"} <= failed            # would_deny lets them out
    assert "ipv6" not in failed and "udp" not in failed   # not policy decisions


def test_rule_opening_the_metadata_address_fails(tmp_path: Path) -> None:
    code, lines, _ = selftest(write(tmp_path, SOUND + """
  - id: metadata
    addresses: [169.254.169.254/32]
    ports: [80]
"""))
    assert code == 1
    failed = [d for v, c, d in lines if v == "FAIL"]
    assert len(failed) == 1
    assert failed[0].startswith("http://169.254.169.254/ is refused: the sandbox got a 200; "
                                "the internet saw http to ['169.254.169.254', 80]")
