"""The overview's routes in the real app (FastAPI's TestClient, on the root socket's terms):
the page with its CSP, the vendored assets and nothing else, the overview and budget data."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from gateway.approvals.book import ApprovalBook
from gateway.audit.writer import AuditWriter
from gateway.control.api import ControlPlane, create_app
from gateway.control.policy_store import PolicyStore
from gateway.control.secrets import Secrets
from gateway.db import make_engine
from vault.crypto import MasterKey
from vault.store import Vault

USAGE = [{"sandbox_id": "sb1", "owner": "tok-1", "scope": "rule", "rule": "up", "policy": "p",
          "per": 3600, "window_start": 0, "resets_at": 3600, "bytes_up": 5,
          "bytes_up_limit": 10, "requests": 1, "requests_limit": None}]


@pytest.fixture
def api(tmp_path: Path) -> Iterator[TestClient]:
    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    writer = AuditWriter(engine, gateway_id="gw")
    writer.start()
    writer.record(decision="deny", reason="no_matching_rule", protocol="https",
                  host="evil.test", port=443, sandbox_id="sb1", policy="p")
    vault = Vault(engine, MasterKey.generate())
    book = ApprovalBook(engine, lambda _row: None, gateway_id="gw", timeout=60)
    plane = ControlPlane(engine, writer, PolicyStore(tmp_path / "policies"),
                         Secrets(vault, None), approvals=book,
                         budgets=lambda: [dict(u) for u in USAGE])  # type: ignore[arg-type]
    with TestClient(create_app(plane, lambda: True, local=True)) as client:
        yield client
    writer.close()
    engine.dispose()


def test_the_page_and_only_its_assets_are_served(api: TestClient) -> None:
    page = api.get("/overview")
    assert page.status_code == 200 and "uPlot.iife.min.js" in page.text
    assert "script-src 'self';" in page.headers["content-security-policy"]
    assert api.get("/web/sandgate.css").headers["content-type"].startswith("text/css")
    script = api.get("/web/uPlot.iife.min.js")
    assert script.status_code == 200 and script.text.startswith("/*! https://github.com/leeoniya")
    assert api.get("/web/overview.js").headers["content-type"].startswith("text/javascript")
    for name in ("overview.html", "..%2Faudit.html", "LICENSE", "vendor"):
        assert api.get(f"/web/{name}").status_code == 404


def test_overview_and_budgets(api: TestClient) -> None:
    data: dict[str, Any] = api.get("/v1/audit/overview",
                                   params={"since": "1h", "buckets": 6}).json()
    assert len(data["buckets"]) == 6
    assert data["series"] == [{"host": "evil.test", "allowed": [0] * 5 + [0],
                               "denied": [0] * 5 + [1]}]
    assert data["top_denied_hosts"] == [{"host": "evil.test", "count": 1}]
    assert api.get("/v1/audit/overview", params={"policy": "other"}).json()["series"] == []
    assert api.get("/v1/audit/overview", params={"buckets": 0}).status_code == 422
    assert api.get("/v1/budgets").json() == {"budgets": USAGE}
    assert api.get("/v1/budgets", params={"sandbox": "sb2"}).json() == {"budgets": []}


@pytest.mark.parametrize("path", ["/audit", "/overview", "/approvals"])
def test_pages_run_only_their_own_script_files_and_cannot_be_framed(api: TestClient,
                                                                     path: str) -> None:
    page = api.get(path)
    policy = page.headers["content-security-policy"]
    assert "script-src 'self';" in policy and "unsafe-inline" not in policy.split("style-src")[0]
    assert "frame-ancestors 'none'" in policy and page.headers["x-frame-options"] == "DENY"
    # an inline script would not run under that policy: every script is a served file
    scripts = re.findall(r"<script([^>]*)>", page.text)
    assert scripts and all('src="/web/' in attributes for attributes in scripts)
    for name in re.findall(r'(?:src|href)="/web/([^"]+)"', page.text):
        assert api.get(f"/web/{name}").status_code == 200, name
