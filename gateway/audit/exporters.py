"""What follows each committed batch of audit rows out of the database: the chain head,
appended to the heads file (always) and sent to the OTLP collector (when configured), signed
with the audit key when there is one; signed heads in the database; OTLP export of rows."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from sqlalchemy.engine import Engine

from gateway.audit.heads import HeadsFile, HeadSigner, make_head, record_signed_head
from gateway.audit.otlp import OtlpExporter
from gateway.audit.writer import AuditWriter
from gateway.timing import HEAD_EXPORT_INTERVAL, HEAD_SIGNING_INTERVAL


class HeadPublisher:
    """Publishes the writer's head outside the database at most every HEAD_EXPORT_INTERVAL
    (when it moved), and into the database every HEAD_SIGNING_INTERVAL. Runs on the writer's
    thread, after a commit: a head never names a row that is not in the database."""

    def __init__(self, writer: AuditWriter, engine: Engine, heads: HeadsFile,
                 signer: HeadSigner | None, otlp: OtlpExporter | None) -> None:
        self.writer = writer
        self.engine = engine
        self.heads = heads
        self.signer = signer
        self.otlp = otlp
        self._exported = (-1, "")
        self._last_export = 0.0
        self._last_signed = 0.0

    def after_commit(self, _rows: list[dict[str, object]]) -> None:
        now = time.monotonic()
        if now - self._last_export >= HEAD_EXPORT_INTERVAL:
            self._last_export = now
            self.export()
        if self.signer is not None and now - self._last_signed >= HEAD_SIGNING_INTERVAL:
            self._last_signed = now
            record_signed_head(self.engine, self.signer, self.writer.gateway_id,
                               *self.writer.head)

    def export(self) -> None:
        seq, hash_ = self.writer.head
        if seq == 0 or (seq, hash_) == self._exported:
            return
        head = make_head(self.signer, self.writer.gateway_id, seq, hash_)
        self.heads.append(head)
        if self.otlp is not None:
            self.otlp.submit_head(head)
        self._exported = (seq, hash_)

    def close(self) -> None:
        self.export()
        if self.signer is not None:
            record_signed_head(self.engine, self.signer, self.writer.gateway_id,
                               *self.writer.head)


def attach(writer: AuditWriter, engine: Engine, *, heads_file: Path, signing_key: Path | None,
           otlp_endpoint: str | None) -> list[Callable[[], None]]:
    """Hook the exporters to the writer; returns what to call at shut-down, in order."""
    closers: list[Callable[[], None]] = []
    signer = HeadSigner.from_file(signing_key) if signing_key is not None else None
    otlp = None
    if otlp_endpoint:
        otlp = OtlpExporter(otlp_endpoint, writer.gateway_id)
        otlp.start()
        writer.after_commit.append(otlp.submit)
    publisher = HeadPublisher(writer, engine, HeadsFile(heads_file), signer, otlp)
    writer.after_commit.append(publisher.after_commit)
    closers.append(publisher.close)
    if otlp is not None:
        closers.append(otlp.close)
    return closers
