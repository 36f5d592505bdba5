"""Budgets end to end and the overview page in a real browser, over one real sandbox run behind
the session gateway (two proxy workers).

The sandbox uploads on a new connection each time, so nftables spreads the uploads over both
workers by source port: the budget holds only if the workers share one count. (Were each
worker to count alone, the 9 uploads that fit would leave each worker room for the streamed
one and the last two; that all 12 land on one worker has a chance of 13 in 4096.)

The overview test reads the same run's audit rows and checks the chart's data, its drawing
and the top-denied table against them."""

from __future__ import annotations

import json
import secrets
from collections import Counter
from dataclasses import dataclass
from typing import Any

import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from tests.harness import Gateway
from tests.integration.test_audit_web import browser  # noqa: F401 - the shared Chromium
from tests.topology import Topology

pytestmark = pytest.mark.integration

BUDGET = 200_000
UPLOAD = 20_000

UPLOADS = """
import http.client, json, socket
tag = %(tag)r
def post(path, body):
    c = http.client.HTTPConnection('www.upstream.test', 80, timeout=30)   # a new connection
    try:
        c.request('POST', path, body=body)
        r = c.getresponse()
        data = r.read()
        return [r.status, json.loads(data).get('reason') if r.status == 429 else None]
    except (OSError, http.client.HTTPException) as e:
        return ['cut', type(e).__name__]
    finally:
        c.close()
out = [post(f'/budget-{tag}/{i}', b'u' * %(upload)d) for i in range(9)]
out.append(post(f'/budget-{tag}/stream', iter([b's' * 5000] * 8)))   # chunked: no length
out += [post(f'/budget-{tag}/late{i}', b'l' * (%(upload)d + 1)) for i in range(2)]
for name in ['nope-a'] * 5 + ['nope-b'] * 2 + ['nope-c']:    # counts unlike www's 3 denials
    try:
        socket.gethostbyname(f'{name}-{tag}.upstream.test')
    except OSError:
        pass
print(json.dumps(out))
"""


@dataclass
class Run:
    tag: str
    policy: str
    statuses: list[list[Any]]
    rows: list[dict[str, Any]]      # this run's audit rows
    upstream: list[dict[str, Any]]  # what the upstream received


@pytest.fixture(scope="module")
def run(gateway: Gateway, topology: Topology) -> Run:
    tag = secrets.token_hex(4)
    name = f"budget-{tag}"
    policy = gateway.policy(name, [{"id": "up", "hosts": ["www.upstream.test"],
                                    "budget": {"bytes_up": BUDGET, "per": "1h"}}],
                            budget={"requests": 50, "per": "1d"})
    before, mark = gateway.last_audit_id(), topology.mark()
    result = gateway.python(policy, UPLOADS % {"upload": UPLOAD, "tag": tag})
    assert result.returncode == 0, result.stderr
    statuses = json.loads(result.stdout.strip().splitlines()[-1])
    rows = [r for r in gateway.audit_rows(since=before) if r["policy"] == name]
    return Run(tag, name, statuses, rows, topology.events(mark, "http"))


def test_a_byte_budget_stops_the_upload_that_crosses_it_across_workers(
        run: Run, gateway: Gateway) -> None:
    assert run.statuses[:9] == [[200, None]] * 9
    assert run.statuses[9][0] == "cut"                      # the streamed one crossed
    assert run.statuses[10:] == [[429, "budget_exceeded"]] * 2
    received = {e["path"]: e["body_len"] for e in run.upstream
                if e["path"].startswith(f"/budget-{run.tag}/")}
    assert received == {f"/budget-{run.tag}/{i}": UPLOAD for i in range(9)}   # nothing more
    http_rows = [r for r in run.rows if r["protocol"] == "http"]
    assert [r["reason"] for r in http_rows] == ["allowed_by_rule"] * 9 + ["budget_exceeded"] * 3
    assert {r["rule"] for r in http_rows} == {"up"}

    summary = json.loads(gateway.sandgate("audit", "summary", "--json").stdout)
    mine = {b["scope"]: b for b in summary["budgets"] if b["policy"] == run.policy}
    rule, sandbox = mine["rule"], mine["sandbox"]
    assert 9 * UPLOAD <= rule["bytes_up"] <= BUDGET and rule["bytes_up_limit"] == BUDGET
    assert (rule["requests"], sandbox["requests"], sandbox["requests_limit"]) == (10, 10, 50)
    assert rule["sandbox_gone"] and rule["per"] == 3600
    table = gateway.sandgate("audit", "summary", f"--sandbox={rule['sandbox_id']}").stdout
    line = next(t for t in table.splitlines() if "rule up" in t)
    percent = 100 * rule["bytes_up"] // BUDGET
    assert f"{rule['bytes_up']}/{BUDGET} ({percent}%)" in line and "(gone)" in line


PARALLEL_BUDGET = 4 * 1024 * 1024
PARALLEL_UPLOAD = 3 * 1024 * 1024
PARALLEL = 6
CHUNK = 1024 * 1024         # gateway.dataplane.leases.CHUNK: the most one stream may owe

PARALLEL_UPLOADS = """
import http.client, json, threading
tag, n, size = %(tag)r, %(n)d, %(size)d
out = [None] * n
start = threading.Barrier(n)
def post(i):
    c = http.client.HTTPConnection('www.upstream.test', 80, timeout=60)   # its own connection
    try:
        start.wait()
        c.request('POST', f'/parallel-{tag}/{i}', body=iter([b'p' * 65536] * (size // 65536)))
        r = c.getresponse()
        data = r.read()
        out[i] = [r.status, json.loads(data).get('reason') if r.status == 429 else None]
    except (OSError, http.client.HTTPException) as e:
        out[i] = ['cut', type(e).__name__]
    finally:
        c.close()
threads = [threading.Thread(target=post, args=(i,)) for i in range(n)]
for t in threads: t.start()
for t in threads: t.join()
print(json.dumps(out))
"""


def test_parallel_uploads_together_stop_at_the_budget(gateway: Gateway,
                                                      topology: Topology) -> None:
    """Six chunked uploads at once, each on its own connection (spread over both workers),
    each of 3 MiB against one budget of 4 MiB: each used to be told what was left when it
    started, and all six went through (18 MiB). They lease their bytes from one count now:
    at most one completes, the rest are cut, and the count owes at most a chunk a stream."""
    tag = secrets.token_hex(4)
    name = f"parallel-{tag}"
    policy = gateway.policy(name, [{"id": "up", "hosts": ["www.upstream.test"],
                                    "budget": {"bytes_up": PARALLEL_BUDGET, "per": "1h"}}])
    mark = topology.mark()
    result = gateway.python(policy, PARALLEL_UPLOADS % {"tag": tag, "n": PARALLEL,
                                                        "size": PARALLEL_UPLOAD})
    assert result.returncode == 0, result.stderr
    statuses = json.loads(result.stdout.strip().splitlines()[-1])
    received = [e["body_len"] for e in topology.events(mark, "http")
                if e["path"].startswith(f"/parallel-{tag}/")]
    assert sum(received) <= PARALLEL_BUDGET and len(received) <= 1, (statuses, received)
    assert [s for s in statuses if s[0] != 200] and \
        all(s[0] in (200, "cut") or s == [429, "budget_exceeded"] for s in statuses), statuses
    summary = json.loads(gateway.sandgate("audit", "summary", "--json").stdout)
    [rule] = [b for b in summary["budgets"] if b["policy"] == name]
    assert sum(received) <= rule["bytes_up"] <= PARALLEL_BUDGET + PARALLEL * CHUNK


def expected(rows: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    per_host: dict[str, dict[str, int]] = {}
    for row in rows:
        kind = {"allow": "allowed", "would_deny": "allowed", "deny": "denied"}.get(row["decision"])
        if kind is not None:
            counts = per_host.setdefault(row["host"], {"allowed": 0, "denied": 0})
            counts[kind] += 1
    return per_host


COLOURS = """
const canvas = document.querySelector('#chart-denied canvas');
const {data} = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height);
const seen = {};
for (let i = 0; i < data.length; i += 4) {
  if (data[i + 3] < 255) continue;
  const rgb = [data[i], data[i + 1], data[i + 2]].join(',');
  seen[rgb] = (seen[rgb] || 0) + 1;
}
return seen;
"""
RED = "214,39,40"       # the page's first series colour (#d62728): the busiest host


def table_rows(driver: webdriver.Chrome, table: str) -> list[list[str]]:
    rows: list[list[str]] = driver.execute_script(
        f"return [...document.querySelectorAll('#{table} tbody tr')].map("
        "r => [...r.cells].map(c => c.textContent))")
    return rows


def test_the_overview_draws_the_runs_audit_rows(run: Run, gateway: Gateway,
                                               browser: webdriver.Chrome,  # noqa: F811
                                               tmp_path_factory: pytest.TempPathFactory) -> None:
    token = gateway.token("auditor", f"overview-{run.tag}")
    wait = WebDriverWait(browser, 30, poll_frequency=0.2)
    browser.set_window_size(1400, 1500)     # the whole page in the screenshot
    browser.get(f"{gateway.api_url}/overview?since=15m&policy={run.policy}")
    browser.execute_script("sessionStorage.clear()")
    browser.find_element(By.ID, "token").send_keys(token)
    browser.find_element(By.ID, "apply").click()
    wait.until(lambda d: d.find_element(By.ID, "status").text.startswith("updated"))

    want = expected(run.rows)
    charts: dict[str, dict[str, list[int]]] = browser.execute_script(
        "const out = {};"
        "for (const kind of ['allowed', 'denied']) {"
        "  const u = window.sandgateOverview.charts[kind];"
        "  out[kind] = Object.fromEntries("
        "    u.series.slice(1).map((s, i) => [s.label, u.data[i + 1]]));"
        "}"
        "return out;")
    drawn = {host: {kind: sum(charts[kind][host]) for kind in ("allowed", "denied")}
             for host in charts["denied"]}
    assert drawn == want
    assert want["www.upstream.test"]["denied"] == 3
    # every host's line differs (one drawn over an equal one would hide it)
    assert len({counts["denied"] for counts in want.values()}) == len(want)
    shot = tmp_path_factory.mktemp("overview") / "overview.png"
    assert browser.save_screenshot(str(shot)), shot
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
    busiest = browser.execute_script("return window.sandgateOverview.data.series[0].host")
    assert busiest == min(want, key=lambda h: (-sum(want[h].values()), h))
    colours: dict[str, int] = browser.execute_script(COLOURS)
    assert colours.get(RED, 0) > 20, (shot, sorted(colours.items(), key=lambda kv: -kv[1])[:8])

    denied = Counter(r["host"] for r in run.rows if r["decision"] == "deny")
    assert table_rows(browser, "top-denied-hosts") == [
        [host, str(n)] for host, n in sorted(denied.items(), key=lambda kv: (-kv[1], kv[0]))]
    reasons = Counter(r["reason"] for r in run.rows if r["decision"] == "deny")
    assert {r[0]: int(r[1]) for r in table_rows(browser, "top-denied-reasons")} == reasons
    # an auditor reads the audit log, not the approvals (they decide policy)
    assert browser.find_element(By.ID, "approvals").text == \
        "not shown: approvals need a token of role admin or security"

    # drill down into the sandbox: the budgets it spent, and the address says so
    sandbox = {r["sandbox_id"] for r in run.rows}.pop()
    browser.find_element(By.CSS_SELECTOR, "#per-sandbox td.drill").click()
    wait.until(lambda d: f"sandbox={sandbox}" in d.current_url
               and any(f"{sandbox} (gone)" == row[0] for row in table_rows(d, "budgets")))
    spent = {row[2]: row[3] for row in table_rows(browser, "budgets")}
    used, limit = spent["rule up"].strip().split(" / ")
    assert 9 * UPLOAD <= int(used) <= BUDGET and int(limit) == BUDGET
