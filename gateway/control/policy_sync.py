"""Policies written through any gateway's API reach every gateway on the same database.

`PUT/DELETE /v1/policies/{name}` writes the file in this gateway's policy directory and
publishes the text as the next revision of a `policy_document` row; every gateway (this one
too) pulls revisions it has not applied yet every POLICY_SYNC_INTERVAL (gateway.timing) and
writes them into its own policy directory, where hot reload picks them up. So a change made
through one gateway is enforced by all within POLICY_SYNC_INTERVAL + POLICY_RELOAD_INTERVAL
(1.5 s), plus the proxy workers' own reload (0.5 s): 2 s in all.

Files edited by hand stay local to their host (deploy them to every host, or use the API);
the last revision applied is remembered in the data directory, so a restart does not undo a
hand edit made after it.
"""

from __future__ import annotations

import logging
import os
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import func
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from gateway.control.models import PolicyDocument

logger = logging.getLogger(__name__)



class PolicySync:
    def __init__(self, engine: Engine, policy_dir: Path, gateway_id: str,
                 seen_file: Path) -> None:
        self.engine = engine
        self.policy_dir = policy_dir
        self.gateway_id = gateway_id
        self.seen_file = seen_file

    def publish(self, name: str, text: str | None) -> int:
        """Store `text` (None: deleted) as the next revision; return it."""
        for _attempt in range(20):
            with Session(self.engine) as session:
                latest = session.exec(select(func.max(PolicyDocument.revision))).one()
                revision = (latest or 0) + 1
                row = session.get(PolicyDocument, name) or PolicyDocument(
                    name=name, revision=revision, gateway_id=self.gateway_id)
                row.yaml, row.revision, row.gateway_id = text, revision, self.gateway_id
                row.updated_at = datetime.now(UTC)
                session.add(row)
                try:
                    session.commit()
                except IntegrityError:
                    continue   # another gateway took this revision; take the next
                return revision
        raise RuntimeError(f"could not publish policy {name}: too much contention")

    @property
    def seen(self) -> int:
        try:
            return int(self.seen_file.read_text())
        except (OSError, ValueError):
            return 0

    def pull(self) -> list[str]:
        """Apply every revision not applied yet; return the names written or removed."""
        seen = self.seen
        with Session(self.engine) as session:
            rows = session.exec(select(PolicyDocument)
                                .where(PolicyDocument.revision > seen)
                                .order_by(PolicyDocument.revision)  # type: ignore[arg-type]
                                ).all()
        changed = [row.name for row in rows if self._apply(row)]
        if rows:
            _write_atomically(self.seen_file, str(rows[-1].revision))
        return changed

    def _apply(self, row: PolicyDocument) -> bool:
        path = self.policy_dir / f"{row.name}.yaml"
        if row.yaml is None:
            if not path.exists():
                return False
            path.unlink()
        else:
            if path.exists() and path.read_text() == row.yaml:
                return False
            self.policy_dir.mkdir(parents=True, exist_ok=True)
            _write_atomically(path, row.yaml)
        logger.info("policy %s revision %d from gateway %s applied", row.name, row.revision,
                    row.gateway_id)
        return True


def _write_atomically(path: Path, text: str) -> None:
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(handle, "w") as out:
        out.write(text)
    os.chmod(temp, 0o644)
    os.replace(temp, path)
