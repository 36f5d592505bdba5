"""What follows each committed batch of audit rows out of the database: signed chain heads
(third-party verifiable) and OTLP export, when configured."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from sqlalchemy.engine import Engine

from gateway.audit.chain import HeadSigner, record_signed_head
from gateway.audit.otlp import OtlpExporter
from gateway.audit.writer import AuditWriter
from gateway.timing import HEAD_SIGNING_INTERVAL


def attach(writer: AuditWriter, engine: Engine, *, signing_key: Path | None,
           otlp_endpoint: str | None) -> list[Callable[[], None]]:
    """Hook the exporters to the writer; returns what to call at shut-down."""
    closers: list[Callable[[], None]] = []
    if signing_key is not None:
        signer = HeadSigner.from_file(signing_key)
        last = [0.0]

        def sign(_rows: list[dict[str, object]]) -> None:
            if time.monotonic() - last[0] >= HEAD_SIGNING_INTERVAL:
                last[0] = time.monotonic()
                record_signed_head(engine, signer, writer.gateway_id, *writer.head)

        writer.after_commit.append(sign)
        closers.append(lambda: record_signed_head(engine, signer, writer.gateway_id,
                                                  *writer.head))
    if otlp_endpoint:
        exporter = OtlpExporter(otlp_endpoint, writer.gateway_id)
        exporter.start()
        writer.after_commit.append(exporter.submit)
        closers.append(exporter.close)
    return closers
