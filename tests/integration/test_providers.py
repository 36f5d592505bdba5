"""Credentials the gateway keeps fresh, end to end from gVisor sandboxes, against the test
internet's token servers (sandbox_net.testnet.tokens: Authlib's OAuth2 server, GitHub- and
Google-shaped endpoints verifying the app's and the service account's keys), whose tokens
live a few seconds, and an upstream that requires a client certificate (testnet.mtls).

Calls keep working across expiry, every refresh is audited, a revoked refresh token makes
calls fail with the reason, a token endpoint at a refused address is not dialed, a client
certificate authenticates only the requests of the rule that holds it, and no token, key or
refresh token is ever in the sandbox, the audit log, the logs or the database in clear."""

from __future__ import annotations

import json
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.client import Client
from sandbox_net.testnet.mtls import ClientPki
from sandbox_net.testnet.tokens import Material
from tests.conftest import assert_no_secret_in
from tests.harness import REAL_SECRETS, Gateway
from tests.topology import TOKENS_IP, Topology

pytestmark = pytest.mark.integration

AUTH = "auth.upstream.test"
# A sandbox's probe: each call on a new connection; `wait` sleeps in between.
PROBE = """
import base64, json, os, socket, sys, time, urllib.request, urllib.error
def call(url, auth, timeout):
    request = urllib.request.Request(url, headers={"Authorization": auth} if auth else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as r:
            return [r.status, json.loads(r.read())]
    except urllib.error.HTTPError as e:
        body = e.read()
        try:
            return [e.code, json.loads(body)]
        except ValueError:
            return [e.code, body.decode(errors="replace")]
    except (TimeoutError, socket.timeout, urllib.error.URLError, ConnectionError) as e:
        return [0, type(e).__name__]
out = []
for step in json.loads(sys.argv[1]):
    if "wait" in step:
        time.sleep(step["wait"])
        continue
    value = os.environ.get(step.get("secret") or "", "")
    auth = ("Basic " + base64.b64encode(b"x-access-token:" + value.encode()).decode()
            if step.get("basic") else "Bearer " + value) if value else ""
    out.append(call(step["url"], auth, step.get("timeout", 30)))
print(json.dumps({"calls": out, "env": {k: v for k, v in os.environ.items()
                                         if k.isupper() and v.startswith("sgp_")}}))
"""


@pytest.fixture(scope="module")
def tokens(topology: Topology) -> Material:
    assert topology.material is not None, "the session topology runs with tokens=True"
    REAL_SECRETS.extend(topology.material.secret_values())
    return topology.material


@pytest.fixture(scope="module")
def client(gateway: Gateway) -> Iterator[Client]:
    with gateway.admin_client("providers-suite") as c:
        yield c


@pytest.fixture(scope="module", autouse=True)
def nothing_in_clear(gateway: Gateway, topology: Topology) -> Iterator[None]:
    """After the module: every token issued, key and refresh token, searched for in the
    gateway's data dir (database, WAL, logs) and its whole audit log."""
    mark = topology.mark()
    yield
    issued = topology.events(mark, "token-issued")
    values = [e[k] for e in issued for k in ("token", "refresh_token") if e.get(k)]
    REAL_SECRETS.extend(values)
    if topology.material is not None:
        values += topology.material.secret_values()
    audit = json.dumps(gateway.audit_rows(limit=100000))
    assert not [v for v in values if v in audit], "a token is in the audit log"
    listing = gateway.sandgate("secret", "list").stdout
    assert not [v for v in values if v in listing]
    assert_no_secret_in(gateway.home)


def probe(gateway: Gateway, policy: Path, secrets: list[str],
          steps: list[dict[str, Any]]) -> dict[str, Any]:
    flags = [f"--secret={s}" for s in secrets]
    result = gateway.sandgate("run", f"--policy={policy}", *flags, "--", "/usr/bin/python3",
                              "-c", PROBE, json.dumps(steps), timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    return dict(json.loads(result.stdout.strip().splitlines()[-1]))


def in_sandbox_output(run: dict[str, Any], topology: Topology, mark: int) -> list[str]:
    """The issued tokens that reached the sandbox (none should)."""
    text = json.dumps(run)
    return [e["token"] for e in topology.events(mark, "token-issued")
            if e.get("token") and e["token"] in text]


def control(topology: Topology, path: str, client_id: str) -> dict[str, Any]:
    """The token server's test control, from the host."""
    assert topology.ca is not None
    trust = ssl.create_default_context(cafile=str(topology.ca.ca_cert))
    trust.verify_flags &= ~ssl.VERIFY_X509_STRICT      # the test CA sets no key identifiers
    with httpx.Client(verify=trust) as http:
        answer = http.post(f"https://{TOKENS_IP}{path}", data={"client_id": client_id},
                           headers={"host": AUTH}, extensions={"sni_hostname": AUTH})
    answer.raise_for_status()
    return dict(answer.json())


def refreshes(gateway: Gateway, since: int, secret: str) -> list[dict[str, Any]]:
    return [r for r in gateway.audit_rows(since) if r["protocol"] == "token"
            and r["secrets"] == secret]


def test_client_credentials_across_expiry_one_token_for_all_workers(
        gateway: Gateway, topology: Topology, tokens: Material) -> None:
    done = _set_cli(gateway, "OAUTH_CC", "oauth2_client_credentials",
                    {"token_url": f"https://{AUTH}/oauth/token", "client_id": tokens.cc_client,
                     "scopes": "read"}, stdin=("client_secret", tokens.cc_secret))
    assert "stored OAUTH_CC version 1 (oauth2_client_credentials)" in done
    # the API path needs a rule; the token endpoint beside it needs none
    policy = gateway.policy("oauth-cc", [
        {"id": "api", "hosts": [AUTH], "paths": ["/oauth/api"],
         "inject": [{"secret": "OAUTH_CC", "as": "bearer"}]}])
    mark, last = topology.mark(), gateway.last_audit_id()
    api = {"secret": "OAUTH_CC", "url": f"https://{AUTH}/oauth/api"}
    run = probe(gateway, policy, ["OAUTH_CC"], [
        *[api] * 6, {"wait": tokens.lifetime + 1}, api, {"wait": tokens.lifetime + 1}, api])
    assert [c[0] for c in run["calls"]] == [200] * 8
    placeholder = run["env"]["OAUTH_CC"]
    assert {c[1]["authorization"] for c in run["calls"]} == {f"Bearer {placeholder}"}
    issued = topology.events(mark, "token-issued")
    assert len(issued) == 3                 # six calls over two workers: one token
    used = [e["token"] for e in topology.events(mark, "token-used")]
    assert used == [issued[0]["token"]] * 6 + [issued[1]["token"], issued[2]["token"]]
    assert in_sandbox_output(run, topology, mark) == []
    rows = refreshes(gateway, last, "OAUTH_CC")
    assert [(r["decision"], r["reason"], r["host"], r["path"], r["status"]) for r in rows] \
        == [("allow", "credential_refreshed", AUTH, "/oauth/token", 200)] * 3
    calls = [r for r in gateway.audit_rows(last) if r["host"] == AUTH
             and r["protocol"] in ("http", "https", "h2")]
    assert {(r["rule"], r["secrets"]) for r in calls} == {("api", "OAUTH_CC")}


def _set_cli(gateway: Gateway, name: str, kind: str, fields: dict[str, str],
             stdin: tuple[str, str] | None = None,
             files: dict[str, Path] | None = None) -> str:
    import subprocess

    from tests.harness import REPO, SANDGATE
    args = [*SANDGATE, "secret", "set", name, "--provider", kind]
    args += [f"--field={k}={v}" for k, v in fields.items()]
    args += [f"--file={k}={p}" for k, p in (files or {}).items()]
    if stdin is not None:
        args.append(f"--file={stdin[0]}=-")
    result = subprocess.run(args, input=stdin[1] if stdin else "", env=gateway.env, cwd=REPO,
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_refresh_token_rotates_and_a_revoked_one_fails_with_the_reason(
        gateway: Gateway, topology: Topology, tokens: Material, client: Client) -> None:
    first = control(topology, "/oauth/issue", tokens.rt_client)["refresh_token"]
    REAL_SECRETS.append(first)
    client.put_provider("OAUTH_RT", "oauth2_refresh_token", {
        "token_url": f"https://{AUTH}/oauth/token", "client_id": tokens.rt_client,
        "client_secret": tokens.rt_secret, "refresh_token": first})
    policy = gateway.policy("oauth-rt", [
        {"id": "api", "hosts": [AUTH], "paths": ["/oauth/api"],
         "inject": [{"secret": "OAUTH_RT", "as": "bearer"}]}])
    mark, last = topology.mark(), gateway.last_audit_id()
    api = {"secret": "OAUTH_RT", "url": f"https://{AUTH}/oauth/api"}
    run = probe(gateway, policy, ["OAUTH_RT"], [api, {"wait": tokens.lifetime + 1}, api])
    assert [c[0] for c in run["calls"]] == [200, 200]
    issued = topology.events(mark, "token-issued")
    assert len(issued) == 2 and len({e["refresh_token"] for e in issued} | {first}) == 3
    info = next(s for s in client.secrets() if s["name"] == "OAUTH_RT")
    assert info["version"] == 3             # each rotated refresh token, stored back once
    assert info["provider"] == "oauth2_refresh_token" and info["error"] is None
    assert info["refreshed_at"] and info["expires_at"]
    assert len(refreshes(gateway, last, "OAUTH_RT")) == 2

    control(topology, "/oauth/revoke", tokens.rt_client)
    time.sleep(tokens.lifetime + 1)         # the access token in hand expires too
    last = gateway.last_audit_id()
    run = probe(gateway, policy, ["OAUTH_RT"], [api])
    (status, body), = run["calls"]
    assert status == 502
    assert (body["reason"], body["rule"]) == ("credential_unavailable", "api")
    assert "invalid_grant" in body["detail"] and "OAUTH_RT" in body["detail"]
    failed = refreshes(gateway, last, "OAUTH_RT")
    assert [(r["decision"], r["reason"]) for r in failed] == [
        ("error", "credential_unavailable")]
    assert "invalid_grant" in failed[0]["error"]
    listing = gateway.sandgate("secret", "list").stdout
    line = next(row for row in listing.splitlines() if row.startswith("OAUTH_RT "))
    assert "oauth2_refresh_token" in line and "invalid_grant" in line


def test_github_app_token_narrowed_to_the_rules_repositories(
        gateway: Gateway, topology: Topology, tokens: Material) -> None:
    _set_cli(gateway, "GH_APP", "github_app",
             {"app_id": tokens.github_app_id, "installation_id": tokens.github_installation,
              "api_url": "https://github.upstream.test/github"},
             files={"private_key": tokens.github_key})
    policy = gateway.policy("github", [
        {"id": "repos", "hosts": ["github.upstream.test"], "paths": ["/github/repos/**"],
         "inject": [{"secret": "GH_APP", "as": "basic", "username": "x-access-token",
                     "narrow": {"repositories": ["hello"],
                                "permissions": {"contents": "read"}}}]}])
    mark = topology.mark()
    base = "https://github.upstream.test/github/repos/octo"
    run = probe(gateway, policy, ["GH_APP"], [
        {"secret": "GH_APP", "url": f"{base}/hello", "basic": True},
        {"secret": "GH_APP", "url": f"{base}/other", "basic": True}])
    assert [c[0] for c in run["calls"]] == [200, 401]
    issued, = topology.events(mark, "token-issued")
    assert (issued["repositories"], issued["permissions"]) == (["hello"], {"contents": "read"})
    assert in_sandbox_output(run, topology, mark) == []


def test_google_service_account_access_and_id_tokens(
        gateway: Gateway, topology: Topology, tokens: Material) -> None:
    _set_cli(gateway, "GOOGLE_SA", "google_service_account",
             {"scopes": "https://www.googleapis.com/auth/cloud-platform"},
             files={"service_account": tokens.google_account})
    policy = gateway.policy("google", [
        {"id": "api", "hosts": ["google.upstream.test"], "paths": ["/google/api"],
         "inject": [{"secret": "GOOGLE_SA", "as": "bearer"}]},
        {"id": "run", "hosts": ["google.upstream.test"], "paths": ["/google/id-api"],
         "inject": [{"secret": "GOOGLE_SA", "as": "bearer",
                     "narrow": {"audience": tokens.google_audience}}]}])
    mark = topology.mark()
    run = probe(gateway, policy, ["GOOGLE_SA"], [
        {"secret": "GOOGLE_SA", "url": "https://google.upstream.test/google/api"},
        {"secret": "GOOGLE_SA", "url": "https://google.upstream.test/google/id-api"},
        {"wait": tokens.lifetime + 1},
        {"secret": "GOOGLE_SA", "url": "https://google.upstream.test/google/api"}])
    assert [c[0] for c in run["calls"]] == [200, 200, 200]
    assert run["calls"][1][1]["email"] == tokens.google_email
    assert [e["id_token"] for e in topology.events(mark, "token-issued")] == [
        False, True, False]
    assert in_sandbox_output(run, topology, mark) == []


def test_a_token_endpoint_at_a_refused_address_is_not_dialed(
        gateway: Gateway, topology: Topology, tokens: Material) -> None:
    _set_cli(gateway, "TRAPPED", "oauth2_client_credentials",
             {"token_url": "https://trap-0.upstream.test/oauth/token",
              "client_id": tokens.cc_client}, stdin=("client_secret", tokens.cc_secret))
    policy = gateway.policy("trapped", [
        {"id": "api", "hosts": [AUTH], "paths": ["/oauth/api"],
         "inject": [{"secret": "TRAPPED", "as": "bearer"}]}])
    mark = topology.mark()
    run = probe(gateway, policy, ["TRAPPED"],
                [{"secret": "TRAPPED", "url": f"https://{AUTH}/oauth/api"}])
    (status, body), = run["calls"]
    assert status == 502 and body["reason"] == "credential_unavailable"
    assert "refused addresses" in body["detail"] and "private" in body["detail"]
    assert [e for e in topology.events(mark) if e["kind"] in ("http", "token-issued")] == []


def test_a_client_certificate_only_through_the_rule_that_holds_it(
        gateway: Gateway, topology: Topology) -> None:
    pki: ClientPki | None = topology.client_pki
    assert pki is not None
    REAL_SECRETS.append(pki.key.read_text().strip())
    _set_cli(gateway, "CLIENT_CERT", "mtls_client_cert", {},
             files={"certificate": pki.chain, "key": pki.key})
    holder = gateway.policy("mtls-holder", [
        {"id": "mtls", "hosts": ["mtls.upstream.test"],
         "inject": [{"secret": "CLIENT_CERT", "as": "mtls"}]}])
    other = gateway.policy("mtls-other", [{"id": "plain", "hosts": ["mtls.upstream.test"]}])
    url = "https://mtls.upstream.test/hello"
    mark = topology.mark()
    # the sandbox sends nothing of it: the gateway presents the certificate
    run = probe(gateway, holder, ["CLIENT_CERT"], [{"secret": None, "url": url}])
    assert run["calls"] == [[200, {"client": pki.subject, "path": "/hello"}]]
    assert run["env"]["CLIENT_CERT"].startswith("sgp_")     # a placeholder, not the key
    seen = topology.events(mark, "mtls")
    assert [(e["client"], e["host"]) for e in seen] == [(pki.subject, "mtls.upstream.test")]
    # the same host through a rule without the certificate, or a sandbox without the secret:
    # the upstream refuses the handshake. (mitmproxy 12.3.1 does not pass on a TLS 1.3 alert
    # that comes after its side of the handshake: the request then fails by timing out, not
    # with a 502; either way, it never reaches the upstream.)
    for policy, secrets in ((other, ["CLIENT_CERT"]), (holder, [])):
        mark = topology.mark()
        run = probe(gateway, policy, secrets, [{"secret": None, "url": url, "timeout": 8}])
        assert run["calls"][0][0] in (0, 502), run["calls"]
        assert topology.events(mark, "mtls") == []
        assert len(topology.events(mark, "mtls-refused")) == 1
    secret_list = gateway.sandgate("secret", "list").stdout
    line = next(row for row in secret_list.splitlines() if row.startswith("CLIENT_CERT "))
    assert "mtls_client_cert" in line
