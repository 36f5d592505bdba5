"""The recorded requests `policy learn` and `policy replay` read from the audit log."""

from __future__ import annotations

from sqlalchemy.engine import Engine

from gateway.audit.recordings import recordings
from gateway.audit.writer import AuditWriter


def test_requests_of_the_sandboxes_asked_oldest_first_without_dns(engine: Engine) -> None:
    writer = AuditWriter(engine, gateway_id="gw1")
    writer.start()
    for sandbox in ("sb1", "sb2", "sb3"):
        writer.record(decision="allow", reason="allowed_by_rule", protocol="dns", method="A",
                      host="a.test", port=53, sandbox_id=sandbox)
        writer.record(decision="would_deny", reason="no_matching_rule", protocol="h2",
                      scheme="https", method="GET", host="a.test", port=443, path="/x",
                      sandbox_id=sandbox)
    writer.record(decision="deny", reason="no_matching_rule", protocol="tcp", host="b.test",
                  port=22, sandbox_id="sb1")
    writer.flush()
    writer.close()
    found, cut = recordings(engine, sandboxes=["sb1", "sb3"])
    assert not cut
    assert [(r.sandbox_id, r.protocol, r.host, r.passed) for r in found] == [
        ("sb1", "https", "a.test", True), ("sb3", "https", "a.test", True),
        ("sb1", "tcp", "b.test", False)]
    everything, _ = recordings(engine)
    assert len(everything) == 4
    some, cut = recordings(engine, max_rows=3)
    assert cut and len(some) == 1    # three rows read: two of them DNS
