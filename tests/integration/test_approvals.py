"""Approvals end to end: a real sandbox's request under an `ask` rule is held in a proxy
worker until a person decides, through the CLI, the API (the webhook's decision URL) and
the web page in a real Chromium; nobody deciding denies it; `--for policy` writes a rule
that `sandgate policy diff` shows; the webhook receives signed messages. One gateway (its
approval timeout short) and one sandbox serve the whole module."""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

from gateway.approvals.webhook import HEADER, verify
from gateway.client import Client, ExecResult, Sandbox
from tests.conftest import killed_after
from tests.harness import Gateway, free_port, wait_for, worker_processes
from tests.integration.test_audit_web import browser  # noqa: F401 - the module's Chromium
from tests.topology import Topology

pytestmark = pytest.mark.integration

TIMEOUT = 30          # the approval timeout: room for two CLI runs on a loaded machine
HOST = "secure.upstream.test"
SECRET = "webhook-test-secret"
FETCH = """import sys, urllib.request, urllib.error
method, url = sys.argv[1], sys.argv[2]
request = urllib.request.Request(url, method=method, data=b"x" if method == "POST" else None)
try:
    print(urllib.request.urlopen(request, timeout=90).status)
except urllib.error.HTTPError as e:
    print(e.code, e.headers.get("x-sandgate-reason"))
"""


# An upload of unannounced length (chunked), counting in /tmp/pushed the MiB it got out of
# the sandbox (into its socket): a held request must not let it fill the gateway.
UPLOAD = """import sys, urllib.request, urllib.error
def body():
    for sent in range(int(sys.argv[2])):
        with open("/tmp/pushed", "w") as progress:
            progress.write(str(sent))
        yield b"x" * (1 << 20)
request = urllib.request.Request(sys.argv[1], method="POST", data=body())
try:
    print(urllib.request.urlopen(request, timeout=90).status)
except urllib.error.HTTPError as e:
    print(e.code, e.headers.get("x-sandgate-reason"))
except OSError as e:
    print("cut", type(e).__name__)
"""
FLOOD_MIB = 128


class Hooks(http.server.ThreadingHTTPServer):
    """The webhook's receiver: a real HTTP server on loopback, keeping what it is sent."""

    def __init__(self) -> None:
        self.received: list[tuple[str, bytes]] = []
        super().__init__(("127.0.0.1", free_port()), _Hook)

    def server_bind(self) -> None:     # no name lookup of its own (getfqdn)
        self.socket.bind(self.server_address)
        self.server_name, self.server_port = "127.0.0.1", self.server_address[1]


class _Hook(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["content-length"]))
        assert isinstance(self.server, Hooks)
        self.server.received.append((self.headers.get(HEADER, ""), body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *_args: Any) -> None:
        return


@pytest.fixture(scope="module")
def hooks() -> Iterator[Hooks]:
    server = Hooks()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def asking(tmp_path_factory: pytest.TempPathFactory, topology: Topology,
           hooks: Hooks) -> Iterator[Gateway]:
    with killed_after(tmp_path_factory.mktemp("approvals"), topology) as gw:
        gw.extra_env.update({
            "SANDGATE_APPROVAL_TIMEOUT": str(TIMEOUT),
            "SANDGATE_APPROVAL_WEBHOOK_URL": f"http://127.0.0.1:{hooks.server_port}/hook",
            "SANDGATE_APPROVAL_WEBHOOK_SECRET": SECRET,
        })
        gw.policy("asking", [{"id": "ask-secure", "action": "ask", "hosts": [HOST]}])
        gw.launch()
        try:
            gw.wait_until(gw.healthy, timeout=180)   # a loaded machine starts workers slowly
            yield gw
        finally:
            gw.stop()


@pytest.fixture(scope="module")
def root(asking: Gateway) -> Iterator[Client]:
    with Client(uds=str(asking.home / "control.sock")) as client:
        yield client


@pytest.fixture(scope="module")
def sandbox(root: Client) -> Iterator[Sandbox]:
    with root.create(policy="asking") as made:
        yield made


@pytest.fixture(scope="module")
def pool() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(4) as executor:
        yield executor


def fetch(pool: ThreadPoolExecutor, sandbox: Sandbox, path: str,
          method: str = "GET") -> Future[ExecResult]:
    """The request from inside the sandbox, in the background: it is held."""
    return pool.submit(sandbox.exec, ["/usr/bin/python3", "-c", FETCH, method,
                                      f"https://{HOST}{path}"], timeout=90)


def answer(held: Future[ExecResult]) -> str:
    result = held.result(timeout=TIMEOUT + 60)
    assert result.exit_code == 0, result.stderr
    return result.stdout.strip()


def pending(root: Client, path: str) -> dict[str, Any]:
    def find() -> dict[str, Any] | None:
        rows = root.request("GET", "/v1/approvals", params={"status": "pending"})
        return next((r for r in rows if r["path"] == path and r["host"] == HOST), None)
    found: dict[str, Any] = wait_for(find, timeout=TIMEOUT)
    return found


def workers_rss_kib(gateway: Gateway) -> int:
    total = 0
    for pid in worker_processes(gateway.home):
        status = Path(f"/proc/{pid}/status").read_text()
        total += int(next(line.split()[1] for line in status.splitlines()
                          if line.startswith("VmRSS:")))
    return total


def pushed(sandbox: Sandbox) -> int:
    """MiB the upload got into its socket so far, once it stopped getting more: read until
    two readings a second apart agree (the sender blocks when nobody reads)."""
    def read() -> int:
        result = sandbox.exec(["/bin/cat", "/tmp/pushed"])
        return int(result.stdout or 0)
    last = -1
    while (now := read()) != last and now < FLOOD_MIB - 1:
        last = now
        time.sleep(1.0)
    return now


def audit_for(root: Client, path: str) -> list[dict[str, Any]]:
    return [r for r in root.audit(host=HOST) if r["path"] == path]


def test_held_then_allowed_through_the_cli(asking: Gateway, root: Client, sandbox: Sandbox,
                                           pool: ThreadPoolExecutor) -> None:
    held = fetch(pool, sandbox, "/cli", "POST")
    approval = pending(root, "/cli")
    assert (approval["method"], approval["rule"], approval["sandbox_id"]) == (
        "POST", "ask-secure", sandbox.id)
    assert not held.done()
    listed = asking.sandgate("approvals", "list")
    assert listed.returncode == 0 and "/cli" in listed.stdout, listed.stderr
    allowed = asking.sandgate("approvals", "allow", str(approval["id"]))
    assert allowed.returncode == 0, allowed.stderr
    assert answer(held) == "200"
    rows = wait_for(lambda: len(audit_for(root, "/cli")) >= 2 and audit_for(root, "/cli"), 10)
    decision = next(r for r in rows if r["protocol"] == "approval")
    request = next(r for r in rows if r["protocol"] != "approval")
    assert (decision["decision"], decision["reason"], decision["actor"]) == (
        "allow", "approved", "local")
    assert (request["decision"], request["reason"], request["status"]) == (
        "allow", "approved", 200)


def test_denied_through_the_cli(asking: Gateway, root: Client, sandbox: Sandbox,
                                pool: ThreadPoolExecutor) -> None:
    held = fetch(pool, sandbox, "/no")
    approval = pending(root, "/no")
    result = asking.sandgate("approvals", "deny", str(approval["id"]))
    assert result.returncode == 0, result.stderr
    assert answer(held) == "403 approval_denied"
    again = asking.sandgate("approvals", "allow", str(approval["id"]))
    assert again.returncode != 0 and "already denied" in again.stderr


def test_allowed_for_the_sandbox_through_the_api_decision_url(
        asking: Gateway, root: Client, sandbox: Sandbox, pool: ThreadPoolExecutor,
        hooks: Hooks) -> None:
    token = asking.token("security", "approver-api")
    held = fetch(pool, sandbox, "/api")
    approval = pending(root, "/api")
    message = wait_for(lambda: next(
        (json.loads(b) for _, b in hooks.received
         if json.loads(b)["approval"]["id"] == approval["id"]), None), 10)
    url = message["decision_url"]["allow"]
    assert url == f"{asking.api_url}/v1/approvals/{approval['id']}/allow"
    response = httpx.post(url, json={"for": "sandbox"},
                          headers={"authorization": f"Bearer {token}"}, timeout=30)
    assert response.status_code == 200, response.text
    assert answer(held) == "200"
    # the same request again goes without asking; another path is asked about
    assert answer(fetch(pool, sandbox, "/api")) == "200"
    assert [a["path"] for a in root.request("GET", "/v1/approvals")].count("/api") == 1
    decision = next(r for r in audit_for(root, "/api") if r["protocol"] == "approval")
    assert decision["actor"].startswith("approver-api (token:")
    assert "allowed for sandbox" in decision["error"]
    # revoked: the same request is asked about again
    revoked = asking.sandgate("approvals", "revoke", str(approval["id"]))
    assert revoked.returncode == 0 and "asked about again" in revoked.stdout, revoked.stderr
    again = fetch(pool, sandbox, "/api")
    asked = pending(root, "/api")
    assert asked["id"] != approval["id"]
    root.request("POST", f"/v1/approvals/{asked['id']}/deny")
    assert answer(again) == "403 approval_denied"
    row = next(r for r in audit_for(root, "/api") if "revoked" in (r["error"] or ""))
    assert (row["protocol"], row["actor"]) == ("approval", "local")


def test_the_webhook_messages_are_signed(asking: Gateway, root: Client, hooks: Hooks,
                                         sandbox: Sandbox, pool: ThreadPoolExecutor) -> None:
    held = fetch(pool, sandbox, "/hook?page=2&access_token=abc123", "POST")
    approval = pending(root, "/hook")
    assert (approval["query"], approval["body_bytes"]) == ("page=2&access_token=[redacted]", 1)
    signed = wait_for(lambda: next(((h, b) for h, b in hooks.received
                                    if json.loads(b)["approval"]["path"] == "/hook"), None), 10)
    header, body = signed
    assert b"abc123" not in body
    assert json.loads(body)["approval"]["query"] == "page=2&access_token=[redacted]"
    assert verify(SECRET, body, header, time.time())
    assert not verify("another-secret", body, header, time.time())
    assert not verify(SECRET, body.replace(b"/hook", b"/hooK"), header, time.time())
    root.request("POST", f"/v1/approvals/{approval['id']}/deny")
    assert answer(held) == "403 approval_denied"


def test_nobody_deciding_denies_it_in_time(root: Client, sandbox: Sandbox,
                                           pool: ThreadPoolExecutor) -> None:
    started = time.monotonic()
    held = fetch(pool, sandbox, "/late")
    approval = pending(root, "/late")
    assert answer(held) == "403 approval_timeout"
    assert time.monotonic() - started >= TIMEOUT - 1
    assert root.request("GET", f"/v1/approvals/{approval['id']}")["status"] == "expired"
    rows = wait_for(lambda: len(audit_for(root, "/late")) >= 2 and audit_for(root, "/late"),
                    10)
    assert {(r["protocol"], r["decision"], r["reason"]) for r in rows} == {
        ("approval", "deny", "approval_timeout"), ("http", "deny", "approval_timeout")}


def test_allowed_for_the_policy_writes_a_reviewable_rule(
        asking: Gateway, root: Client, sandbox: Sandbox, pool: ThreadPoolExecutor,
        tmp_path: Path) -> None:
    before = tmp_path / "before.yaml"
    before.write_text((asking.policy_dir / "asking.yaml").read_text())
    held = fetch(pool, sandbox, "/policy/items")
    approval = pending(root, "/policy/items")
    allowed = asking.sandgate("approvals", "allow", str(approval["id"]), "--for", "policy")
    assert allowed.returncode == 0, allowed.stderr
    assert f"rule approved-{approval['id']} added to policy asking" in allowed.stdout
    assert answer(held) == "200"
    diff = asking.sandgate("policy", "diff", str(before), "asking")
    assert diff.returncode == 1, diff.stderr
    assert f"widens       rule approved-{approval['id']}" in diff.stdout
    assert "secure.upstream.test" in diff.stdout
    assert root.request("GET", f"/v1/approvals/{approval['id']}")["revision"] is not None


def test_allowed_through_the_web_page(asking: Gateway, root: Client, sandbox: Sandbox,
                                      pool: ThreadPoolExecutor,
                                      browser: webdriver.Chrome) -> None:  # noqa: F811
    token = asking.token("security", "approver-web")
    held = fetch(pool, sandbox, "/web")
    approval = pending(root, "/web")
    wait = WebDriverWait(browser, 20, poll_frequency=0.2)
    browser.get(f"{asking.api_url}/approvals")
    browser.find_element(By.ID, "token").send_keys(token)
    browser.find_element(By.ID, "apply").click()
    row = wait.until(lambda d: next(
        (r for r in d.find_elements(By.CSS_SELECTOR, "#pending tr")
         if r.get_attribute("data-id") == str(approval["id"])), None))
    assert f"GET https://{HOST}:443/web" in row.text
    Select(row.find_element(By.CSS_SELECTOR, "select.reach")).select_by_value("once")
    row.find_element(By.CSS_SELECTOR, "button.allow").click()
    assert answer(held) == "200"
    wait.until(lambda d: any(r.get_attribute("data-id") == str(approval["id"])
                             for r in d.find_elements(By.CSS_SELECTOR, "#decided tr")))
    decided = root.request("GET", f"/v1/approvals/{approval['id']}")
    assert (decided["status"], decided["scope"]) == ("allowed", "once")
    assert decided["decided_by"].startswith("approver-web (token:")


def test_a_held_upload_stays_in_the_sandbox(asking: Gateway, root: Client, sandbox: Sandbox,
                                            pool: ThreadPoolExecutor) -> None:
    """An attacker's chunked upload on a held request: while it waits, the worker reads
    nothing more of the connection, so the body stays in the sandbox, not in the gateway."""
    before = workers_rss_kib(asking)
    held = pool.submit(sandbox.exec, ["/usr/bin/python3", "-c", UPLOAD,
                                      f"https://{HOST}/flood", str(FLOOD_MIB)], timeout=90)
    approval = pending(root, "/flood")
    assert approval["body_bytes"] is None          # not announced: any length may follow
    got_out = pushed(sandbox)
    grown = workers_rss_kib(asking) - before
    print(f"held upload: {got_out} of {FLOOD_MIB} MiB left the sandbox's program; "
          f"the workers grew {grown // 1024} MiB")
    assert got_out < FLOOD_MIB - 1
    assert grown < 32 * 1024
    root.request("POST", f"/v1/approvals/{approval['id']}/deny")
    outcome = held.result(timeout=60).stdout.strip()
    assert outcome.startswith(("403", "cut")), outcome
