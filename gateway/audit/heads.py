"""Chain heads: (gateway, seq, hash) of the last row written, signed with the audit key.

A head kept where the database's owner cannot rewrite it (an append-only file, an OTLP
collector) lets `sandgate audit verify --heads FILE` prove that the database still holds
that row, unchanged, and every row before it: each row's hash covers the one before it.
Checkpoints (where the chain resumes after retention) are signed too, under another message,
so neither can be passed off as the other.
"""

from __future__ import annotations

import base64
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy.engine import Engine
from sqlmodel import Session

from gateway.audit.models import AuditHead
from gateway.clock import utcnow

logger = logging.getLogger(__name__)

HEAD = "sandgate-audit-head"
CHECKPOINT = "sandgate-audit-checkpoint"


def message(kind: str, gateway_id: str, seq: int, hash_: str) -> bytes:
    """What a signature covers; `kind` keeps a head from being replayed as a checkpoint."""
    return f"{kind}:{gateway_id}:{seq}:{hash_}".encode()


class HeadSigner:
    def __init__(self, key: Ed25519PrivateKey) -> None:
        self._key = key

    @classmethod
    def from_file(cls, path: Path) -> HeadSigner:
        if os.stat(path).st_mode & 0o077:
            raise ValueError(f"audit signing key {path} must be mode 0600 (chmod 600 {path})")
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError(f"{path} is not an Ed25519 private key")
        return cls(key)

    def sign(self, gateway_id: str, seq: int, hash_: str, kind: str = HEAD) -> str:
        return base64.b64encode(self._key.sign(message(kind, gateway_id, seq, hash_))).decode()

    @property
    def public_key(self) -> Ed25519PublicKey:
        return self._key.public_key()

    def public_pem(self) -> bytes:
        return self.public_key.public_bytes(serialization.Encoding.PEM,
                                            serialization.PublicFormat.SubjectPublicKeyInfo)


def signed_by(key: Ed25519PublicKey, signature: str | None, kind: str, gateway_id: str,
              seq: int, hash_: str) -> bool:
    if not signature:
        return False
    try:
        key.verify(base64.b64decode(signature), message(kind, gateway_id, seq, hash_))
    except (InvalidSignature, ValueError):
        return False
    return True


def write_keypair(path: Path) -> Path:
    """A new Ed25519 signing key at `path` (0600) and its public key at `path`.pub."""
    key = Ed25519PrivateKey.generate()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    public = path.with_name(path.name + ".pub")
    public.write_bytes(HeadSigner(key).public_pem())
    return public


def load_public_key(path: Path) -> Ed25519PublicKey:
    key = serialization.load_pem_public_key(path.read_bytes())
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError(f"{path} is not an Ed25519 public key")
    return key


@dataclass(frozen=True, slots=True)
class Head:
    gateway_id: str
    seq: int
    hash: str
    signature: str | None = None
    time: str = ""


def make_head(signer: HeadSigner | None, gateway_id: str, seq: int, hash_: str) -> Head:
    signature = signer.sign(gateway_id, seq, hash_) if signer is not None else None
    return Head(gateway_id, seq, hash_, signature, utcnow().isoformat(timespec="seconds") + "Z")


def record_signed_head(engine: Engine, signer: HeadSigner, gateway_id: str, seq: int,
                       hash_: str) -> None:
    if seq == 0:
        return
    with Session(engine) as session:
        session.add(AuditHead(gateway_id=gateway_id, kind="signed", seq=seq, hash=hash_,
                              signature=signer.sign(gateway_id, seq, hash_)))
        session.commit()


class HeadsFile:
    """JSON lines, opened for appending only (O_APPEND: the gateway never rewrites a line, so
    the file can carry `chattr +a`) and fsync'd after each head."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def append(self, head: Head) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, (json.dumps(asdict(head), separators=(",", ":")) + "\n").encode())
            os.fsync(fd)
        finally:
            os.close(fd)

    def heads(self) -> Iterator[Head]:
        """Every head in the file; ValueError naming the line of one that does not parse."""
        with open(self.path, encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    data = json.loads(line)
                    yield Head(str(data["gateway_id"]), int(data["seq"]), str(data["hash"]),
                               data.get("signature"), str(data.get("time", "")))
                except (ValueError, KeyError, TypeError) as e:
                    raise ValueError(f"{self.path} line {number} is not a chain head "
                                     f"({type(e).__name__})") from None

    def last(self, gateway_id: str) -> Head | None:
        """The latest head of one gateway in the file (None when absent or unreadable)."""
        if not self.path.exists():
            return None
        try:
            found = [h for h in self.heads() if h.gateway_id == gateway_id]
        except (OSError, ValueError):
            logger.exception("audit heads file %s is unreadable", self.path)
            return None
        return max(found, key=lambda h: h.seq, default=None)
