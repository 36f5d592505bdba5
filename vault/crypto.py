"""Envelope encryption: each secret version has its own random data key (AES-256-GCM); the
data key is stored wrapped by the master key. Associated data binds every ciphertext to its
secret name and version, so a ciphertext moved to another row does not decrypt."""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

NONCE = 12
KEY_BYTES = 32


class VaultError(Exception):
    """The vault cannot do what was asked; the message says why, never a value."""


class MasterKey:
    """The key that wraps data keys. Its repr shows only its id (a fingerprint)."""

    __slots__ = ("_key", "id")

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise VaultError(f"a master key is {KEY_BYTES} bytes, got {len(key)}")
        self._key = key
        self.id = hashlib.sha256(b"sandgate-master-key-id" + key).hexdigest()[:16]

    @classmethod
    def generate(cls) -> MasterKey:
        return cls(AESGCM.generate_key(bit_length=256))

    @classmethod
    def from_text(cls, text: str) -> MasterKey:
        """Base64 (standard or URL-safe) of 32 bytes, or 64 hex digits."""
        text = text.strip()
        try:
            if len(text) == 64 and all(c in "0123456789abcdefABCDEF" for c in text):
                return cls(bytes.fromhex(text))
            standard = text.replace("-", "+").replace("_", "/")
            return cls(base64.b64decode(standard + "=" * (-len(standard) % 4), validate=True))
        except (ValueError, VaultError):
            raise VaultError("the master key must be 32 bytes, as base64 or 64 hex digits "
                             "(generate one: openssl rand -base64 32)") from None

    def to_text(self) -> str:
        return base64.b64encode(self._key).decode()

    def wrap(self, data_key: bytes, aad: bytes) -> bytes:
        nonce = secrets.token_bytes(NONCE)
        return nonce + AESGCM(self._key).encrypt(nonce, data_key, aad)

    def unwrap(self, wrapped: bytes, aad: bytes) -> bytes:
        try:
            return AESGCM(self._key).decrypt(wrapped[:NONCE], wrapped[NONCE:], aad)
        except InvalidTag:
            raise VaultError("cannot unwrap the data key: wrong master key, or the stored "
                             "key was tampered with") from None

    def __repr__(self) -> str:
        return f"MasterKey(id={self.id})"


def seal(value: bytes, aad: bytes) -> tuple[bytes, bytes]:
    """Encrypt `value` under a fresh data key: (data key, nonce + ciphertext)."""
    data_key = AESGCM.generate_key(bit_length=256)
    nonce = secrets.token_bytes(NONCE)
    return data_key, nonce + AESGCM(data_key).encrypt(nonce, value, aad)


def unseal(data_key: bytes, sealed: bytes, aad: bytes) -> bytes:
    try:
        return AESGCM(data_key).decrypt(sealed[:NONCE], sealed[NONCE:], aad)
    except InvalidTag:
        raise VaultError("the ciphertext does not authenticate: it was tampered with or "
                         "belongs to another secret") from None


@dataclass(frozen=True, slots=True)
class KeySource:
    """Where the master key lives: an environment variable's text, or a file."""

    text: str | None = None
    path: Path | None = None


def load_master_key(source: KeySource, *, create: bool) -> MasterKey:
    """The master key from its source. A key file must be mode 0600 or stricter; with
    `create`, a missing key file is generated (0600)."""
    if source.text is not None:
        return MasterKey.from_text(source.text)
    assert source.path is not None
    path = source.path
    if not path.exists():
        if not create:
            raise VaultError(f"no master key at {path}; start the gateway once "
                             "(sandgate serve) to create it, or set SANDGATE_MASTER_KEY")
        write_key_file(path, MasterKey.generate())
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise VaultError(f"master key file {path} has mode {mode:04o}; it must be 0600 "
                         f"or stricter (chmod 600 {path})")
    return MasterKey.from_text(path.read_text())


def write_key_file(path: Path, key: MasterKey) -> None:
    """Write atomically, created 0600 (never briefly readable by others)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key.to_text() + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
