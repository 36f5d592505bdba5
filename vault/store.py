"""Write-only secret storage in the project's database. Values go in; only the injector
gets them out (as SecretValue); every other interface sees metadata.

A provider secret (vault.providers) holds its provider's configuration as its sealed value:
`reveal` refuses it (the injector must never send a configuration), `reveal_provider` gives
it to the gateway's minting broker and the mTLS addon."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from vault.crypto import MasterKey, VaultError, seal, unseal
from vault.models import SecretRecord, SecretVersion
from vault.secret import SecretValue

MAX_VALUE_BYTES = 64 * 1024


def _value_aad(name: str, version: int) -> bytes:
    return f"sandgate-secret:{name}:{version}".encode()


def _key_aad(name: str, version: int) -> bytes:
    return f"sandgate-data-key:{name}:{version}".encode()


@dataclass(frozen=True, slots=True)
class SecretInfo:
    name: str
    version: int
    created_at: datetime
    updated_at: datetime
    last_used_at: datetime | None
    provider: str | None = None
    refreshed_at: datetime | None = None
    expires_at: datetime | None = None
    error: str | None = None
    error_at: datetime | None = None
    kubernetes_namespaces: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Current:
    """A secret's current version as the database holds it."""

    version: int
    updated_at: datetime
    provider: str | None

    @property
    def generation(self) -> str:
        """Names this version, also apart from a version of the same number that a secret
        deleted and created again had (the same text in every process)."""
        return f"{self.version}@{self.updated_at.isoformat()}"


def _split(namespaces: str | None) -> tuple[str, ...]:
    return tuple(filter(None, (namespaces or "").split(",")))


class VaultConflict(VaultError):
    """The secret changed since the caller read it (a compare-and-set write lost)."""


CURRENT_TTL = 1.0   # seconds; documented in README.md (Secrets without secrets...)


class Vault:
    """Thread-safe. Decrypted values are cached per (name, version) in memory only."""

    def __init__(self, engine: Engine, master: MasterKey) -> None:
        self.engine = engine
        self._master = master
        self._lock = threading.Lock()
        self._cache: dict[tuple[str, int, datetime], SecretValue] = {}
        self._current: dict[str, tuple[Current | None, float]] = {}
        self._used: dict[str, float] = {}
        self._used_flushed = time.monotonic()

    @property
    def master_key_id(self) -> str:
        return self._master.id

    def put(self, name: str, value: str, *, provider: str | None = None,
            expect: str | None = None) -> int:
        """Store a new version of `name`; return its version number. `provider`: the kind
        of provider whose configuration `value` is; `expect`: write only if the current
        version is still this generation (else VaultConflict)."""
        try:
            data = value.encode()
        except UnicodeEncodeError:
            raise VaultError("a secret must be valid UTF-8 text") from None
        if not data:
            raise VaultError("a secret cannot be empty")
        if len(data) > MAX_VALUE_BYTES:
            raise VaultError(f"a secret is at most {MAX_VALUE_BYTES} bytes")
        with self._lock, Session(self.engine) as session:
            record = session.get(SecretRecord, name)
            if expect is not None and (record is None or Current(
                    record.version, record.updated_at, record.provider).generation != expect):
                raise VaultConflict(f"secret {name!r} changed meanwhile")
            version = record.version + 1 if record else 1
            data_key, ciphertext = seal(data, _value_aad(name, version))
            session.add(SecretVersion(
                name=name, version=version, ciphertext=ciphertext,
                wrapped_key=self._master.wrap(data_key, _key_aad(name, version)),
                master_key_id=self._master.id))
            if record is None:
                record = SecretRecord(name=name, version=version)
            else:
                record.version, record.updated_at = version, datetime.now(UTC)
            if record.provider != provider:
                # another kind of secret under the same name: what was seen of the old is moot
                record.refreshed_at = record.expires_at = record.error_at = None
                record.error = None
            record.provider = provider
            session.add(record)
            session.commit()
            self._current.pop(name, None)
        return version

    def delete(self, name: str) -> bool:
        with self._lock, Session(self.engine) as session:
            record = session.get(SecretRecord, name)
            if record is None:
                return False
            for row in session.exec(select(SecretVersion).where(SecretVersion.name == name)):
                session.delete(row)
            session.delete(record)
            session.commit()
            self._cache = {k: v for k, v in self._cache.items() if k[0] != name}
            self._current.pop(name, None)
        return True

    def exists(self, name: str) -> bool:
        with Session(self.engine) as session:
            return session.get(SecretRecord, name) is not None

    def current(self, name: str, *, fresh: bool = False) -> Current | None:
        """The current version of `name`, read from the database at most every CURRENT_TTL
        seconds (changes made through this Vault apply at once); `fresh`: read it now."""
        now = time.monotonic()
        known = self._current.get(name)
        if known is not None and now - known[1] < CURRENT_TTL and not fresh:
            return known[0]
        with Session(self.engine) as session:
            record = session.get(SecretRecord, name)
            current = Current(record.version, record.updated_at, record.provider) \
                if record else None
        self._current[name] = (current, now)
        return current

    def _sealed(self, name: str, fresh: bool = False) -> tuple[Current, SecretValue]:
        current = self.current(name, fresh=fresh)
        if current is None:
            raise VaultError(f"no secret named {name!r}")
        key = (name, current.version, current.updated_at)
        cached = self._cache.get(key)
        if cached is not None:
            return current, cached
        with Session(self.engine) as session:
            row = session.get(SecretVersion, (name, current.version))
        if row is None:
            raise VaultError(f"secret {name!r} version {current.version} is missing")
        data_key = self._master.unwrap(row.wrapped_key, _key_aad(name, current.version))
        value = SecretValue(unseal(data_key, row.ciphertext,
                                   _value_aad(name, current.version)).decode())
        self._cache[key] = value
        return current, value

    def reveal(self, name: str) -> SecretValue:
        """The current value of `name` (the injector's and scrubber's call only). A provider
        secret has no value to reveal: its provider mints one (gateway.providers)."""
        current, value = self._sealed(name)
        if current.provider is not None:
            raise VaultError(f"secret {name!r} is a {current.provider} provider: its value "
                             "is minted by the gateway, never read from the vault")
        return value

    def reveal_provider(self, name: str, *, fresh: bool = False) -> tuple[Current, SecretValue]:
        """A provider secret's configuration (vault.providers), with the version it is;
        `fresh`: as the database holds it now."""
        current, value = self._sealed(name, fresh)
        if current.provider is None:
            raise VaultError(f"secret {name!r} is a stored value, not a provider")
        return current, value

    def set_state(self, name: str, *, refreshed_at: datetime | None = None,
                  expires_at: datetime | None = None, error: str | None = None) -> None:
        """What the gateway saw of a provider secret: a value minted (`refreshed_at`, its
        `expires_at`) or a failure (`error`, which must hold no secret value)."""
        with Session(self.engine) as session:
            record = session.get(SecretRecord, name)
            if record is None:
                return
            if error is None:
                record.refreshed_at, record.expires_at = refreshed_at, expires_at
                record.error = record.error_at = None
            else:
                record.error, record.error_at = error[:500], datetime.now(UTC)
            session.add(record)
            session.commit()

    def set_namespaces(self, name: str, namespaces: Iterable[str]) -> bool:
        """Which Kubernetes namespaces' pods may bind `name` (an empty list: none); False
        when there is no such secret."""
        with self._lock, Session(self.engine) as session:
            record = session.get(SecretRecord, name)
            if record is None:
                return False
            record.kubernetes_namespaces = ",".join(sorted(set(namespaces))) or None
            session.add(record)
            session.commit()
        return True

    def namespaces(self, name: str) -> frozenset[str]:
        """The Kubernetes namespaces whose pods may bind `name`, read now (a change applies
        to the next pod at once); none for a secret that does not exist."""
        with Session(self.engine) as session:
            record = session.get(SecretRecord, name)
        return frozenset(_split(record.kubernetes_namespaces) if record else ())

    def mark_used(self, name: str) -> None:
        """Remember a use; written to the database at most every few seconds."""
        self._used[name] = time.time()
        if time.monotonic() - self._used_flushed > 5:
            self.flush_usage()

    def flush_usage(self) -> None:
        used, self._used = self._used, {}
        self._used_flushed = time.monotonic()
        if not used:
            return
        with Session(self.engine) as session:
            for name, when in used.items():
                record = session.get(SecretRecord, name)
                if record is not None:
                    record.last_used_at = datetime.fromtimestamp(when, UTC)
                    session.add(record)
            session.commit()

    def list(self) -> list[SecretInfo]:
        with Session(self.engine) as session:
            rows = session.exec(select(SecretRecord).order_by(col(SecretRecord.name)))
            return [SecretInfo(r.name, r.version, r.created_at, r.updated_at, r.last_used_at,
                               r.provider, r.refreshed_at, r.expires_at, r.error, r.error_at,
                               _split(r.kubernetes_namespaces))
                    for r in rows]

    def rotate_master(self, new: MasterKey) -> int:
        """Re-wrap every data key with `new` in one transaction; return how many."""
        with self._lock, Session(self.engine) as session:
            rows = list(session.exec(select(SecretVersion)))
            for row in rows:
                data_key = self._master.unwrap(row.wrapped_key, _key_aad(row.name, row.version))
                row.wrapped_key = new.wrap(data_key, _key_aad(row.name, row.version))
                row.master_key_id = new.id
                session.add(row)
            session.commit()
            self._master = new
        return len(rows)
