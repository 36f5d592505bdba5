"""`--for policy` through a real policy store: the stored policy gains the rule (published as
a revision), a packaged policy is refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.approvals.models import ApprovalRecord
from gateway.approvals.policy import policy_writer
from gateway.clock import utcnow
from gateway.control.policy_store import PolicyStore
from gateway.errors import BadRequest


def record(policy: str) -> ApprovalRecord:
    return ApprovalRecord(id=4, expires_at=utcnow(), gateway_id="gw", sandbox_id="sb1",
                          policy=policy, policy_version="v", rule="ask", scheme="https",
                          host="api.test", port=443, method="PUT", path="/x", status="pending")


def test_the_rule_is_written_through_the_store_as_a_revision(tmp_path: Path) -> None:
    store = PolicyStore(tmp_path / "store")
    store.put("web", "version: 1\nname: web\nrules:\n  - {id: ask, action: ask, hosts: "
                     "[api.test]}\n")
    published: list[tuple[str, str | None]] = []
    store.publish = lambda name, text: published.append((name, text)) or 17
    revision, rule = policy_writer(store, None)(record("web"), "alice")()
    assert (revision, rule) == (17, "approved-4")
    policy = store.load(store.path_for("web"))
    assert [r.id for r in policy.rules] == ["ask", "approved-4"]
    assert published[0][0] == "web" and "approval 4, allowed by alice" in (published[0][1] or "")


def test_a_packaged_policy_is_refused(tmp_path: Path) -> None:
    store = PolicyStore(tmp_path / "store")
    with pytest.raises(BadRequest, match="packaged with sandgate and read-only"):
        policy_writer(store, None)(record("default"), "alice")
