"""`--for policy`: write the approved request's rule into the sandbox's policy through the
policy store, as any `PUT /v1/policies/{name}` would (validated, then published as the next
revision every gateway applies); `sandgate policy diff` shows it."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from gateway.approvals.ask import Ask
from gateway.approvals.book import PolicyWrite, PolicyWriter
from gateway.approvals.models import ApprovalRecord
from gateway.approvals.rules import rule_for, with_rule
from gateway.control.policy_store import PolicyStore
from gateway.dataplane.registry import Registry
from gateway.errors import BadRequest


def ask_of(record: ApprovalRecord) -> Ask:
    return Ask(record.sandbox_id, record.owner, record.policy, record.policy_version,
               record.rule, record.scheme, record.host, record.port, record.method, record.path)


def policy_writer(store: PolicyStore, registry: Registry | None) -> PolicyWriter:
    def check(record: ApprovalRecord, who: str) -> PolicyWrite:
        """Refuses (BadRequest) what could not be written, before anything is decided; the
        write itself runs once the decision won (ApprovalBook.decide)."""
        assert record.id is not None
        current = store.get(record.policy)
        if current["read_only"]:
            raise BadRequest(f"policy {record.policy} is packaged with sandgate and read-only",
                             "store a copy of it (sandgate policy, PUT /v1/policies) and run "
                             "sandboxes on that, or allow --for sandbox")
        sandbox = registry.by_id(record.sandbox_id) if registry is not None else None
        if sandbox is not None and sandbox.handle.path.resolve() != \
                Path(current["file"]).resolve():
            raise BadRequest(f"sandbox {record.sandbox_id} runs on the file "
                             f"{sandbox.handle.path}, not the stored policy "
                             f"{record.policy}", "edit that file, or allow --for sandbox")
        when = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        rule = rule_for(ask_of(record), record.id, who, when)
        with_rule(current["yaml"], rule)       # the edit must apply

        def write() -> tuple[int | None, str]:
            # the policy as it is now: an edit made since the check is kept
            latest = store.get(record.policy)["yaml"]
            result = store.put(record.policy, with_rule(latest, rule))
            revision = result.get("revision")
            return (revision if isinstance(revision, int) else None), str(rule["id"])
        return write
    return check
