"""Heads published outside the database after commits: to the heads file (signed), into the
database every signing interval, and at close; OTLP carries them as log records."""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy.engine import Engine

from gateway.audit import exporters
from gateway.audit.chain import verify
from gateway.audit.heads import HEAD, HeadsFile, HeadSigner, make_head, signed_by
from gateway.audit.otlp import payload
from gateway.audit.writer import AuditWriter


def test_heads_reach_the_file_and_the_database(engine: Engine, tmp_path: Path) -> None:
    key = tmp_path / "audit.key"
    from gateway.audit.heads import write_keypair
    write_keypair(key)
    signer = HeadSigner.from_file(key)
    heads = tmp_path / "heads.jsonl"
    writer = AuditWriter(engine, gateway_id="gw1")
    writer.start()
    closers = exporters.attach(writer, engine, heads_file=heads, signing_key=key,
                               otlp_endpoint=None)
    for _ in range(3):
        writer.record(decision="allow", reason="r", protocol="dns")
    writer.flush()
    writer.close()
    for close in closers:
        close()
    written = list(HeadsFile(heads).heads())
    assert written[-1].seq == 3 and len({h.seq for h in written}) == len(written)
    assert signed_by(signer.public_key, written[-1].signature, HEAD, "gw1", 3, written[-1].hash)
    report = verify(engine, signer.public_key, {"file": written})
    assert report.ok and report.chains[0].signed_heads >= 1
    assert os.stat(heads).st_mode & 0o777 == 0o644


def test_otlp_payload_carries_a_head() -> None:
    signer = HeadSigner(Ed25519PrivateKey.generate())
    body = payload([], "gw1", (make_head(signer, "gw1", 7, "ab" * 32),))
    (record,) = body["resourceLogs"][0]["scopeLogs"][0]["logRecords"]
    attributes = {a["key"]: a["value"] for a in record["attributes"]}
    assert record["body"]["stringValue"] == f"audit head gw1 seq 7 {'ab' * 32}"
    assert attributes["sandgate.head.seq"] == {"intValue": "7"}
    assert "sandgate.head.signature" in attributes
