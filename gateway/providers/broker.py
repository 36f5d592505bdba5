"""One value per provider secret for every proxy worker, in the main process.

A worker that needs a provider secret's value asks the hub (protocol.Mint); the hub asks the
broker. The broker answers from its cache while the value is fresh (until shortly before it
expires); otherwise one mint runs for that secret (and narrowing) however many workers ask
at once, in a thread of its own, so no event loop waits on a token endpoint. A rotated
refresh token is stored back as a new version of the secret, once, by this broker alone, and
only over the version it was minted from (a configuration changed meanwhile wins). Each mint
is audited (reason credential_refreshed, or credential_unavailable with the error) and its
outcome written to the secret's state (`sandgate secret list`).

A worker names the version of the configuration it knows (`generation`); a value minted from
another version is not given for it, so a secret set anew is used at once.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from gateway.dataplane.coordinator import Credential
from gateway.dataplane.upstream import UpstreamResolver, Vetted
from gateway.providers import flows, transport
from gateway.providers.flows import Minted, MintError
from policies.schema import Narrow
from vault import providers
from vault.crypto import VaultError
from vault.providers import ProviderConfig
from vault.store import Current, Vault, VaultConflict

logger = logging.getLogger(__name__)

RETRY_AFTER = 5.0         # seconds a failure is answered from the cache before minting again
MARGIN = 60.0             # seconds before expiry a value stops being fresh (at most)
RESOLVE_TIMEOUT = 10.0

type Key = tuple[str, str]   # secret, narrowing


@dataclass
class _Entry:
    generations: set[str]               # configuration versions the value answers for
    value: Any                          # SecretValue | None
    expires_at: float | None
    fresh_until: float
    error: str | None = None
    minted: float = field(default_factory=time.time)

    def answer(self) -> Credential:
        return Credential(self.value, self.fresh_until, self.error)

    def usable(self, generation: str, now: float) -> bool:
        return generation in self.generations and now < self.fresh_until


def fresh_until(expires_at: float | None, now: float) -> float:
    """Shortly before expiry: a fifth of the lifetime early, a minute at most."""
    if expires_at is None:
        return now + flows.UNKNOWN_LIFETIME
    return expires_at - min(MARGIN, max(expires_at - now, 0.0) / 5)


def narrow_key(narrow: Narrow | None) -> str:
    return narrow.model_dump_json() if narrow is not None else ""


def threadsafe_resolve(resolver: UpstreamResolver,
                       loop: asyncio.AbstractEventLoop) -> transport.Resolve:
    """The gateway's resolver (which lives on the main event loop), for the mint threads."""
    def resolve(host: str, permitted: Sequence[ipaddress.IPv4Network]) -> Vetted:
        try:
            literal = ipaddress.IPv4Address(host)
        except ValueError:
            future = asyncio.run_coroutine_threadsafe(resolver.resolve(host, permitted), loop)
            return future.result(timeout=RESOLVE_TIMEOUT)
        return resolver.vet_literal(literal, permitted)
    return resolve


class Broker:
    def __init__(self, vault: Vault, connect: transport.Connector,
                 record: Callable[[dict[str, Any]], None], threads: int = 4) -> None:
        self.vault = vault
        self.connect = connect   # how flows reach token endpoints (transport.connector)
        self.record = record   # one audit row (called from a mint thread; may wait)
        self._entries: dict[Key, _Entry] = {}
        self._flights: dict[Key, asyncio.Future[_Entry]] = {}
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="sandgate-mint")

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def credential(self, secret: str, generation: str, narrow: Narrow | None,
                         sandbox_id: str | None) -> Credential:
        key = (secret, narrow_key(narrow))
        entry = self._entries.get(key)
        if entry is not None and entry.usable(generation, time.time()):
            return entry.answer()
        flight = self._flights.get(key)
        if flight is None:
            loop = asyncio.get_running_loop()
            flight = loop.run_in_executor(self._pool, self._renew, secret, narrow,
                                          sandbox_id, entry)
            self._flights[key] = flight
            flight.add_done_callback(lambda done: self._landed(key, done))
        return (await asyncio.shield(flight)).answer()

    def _landed(self, key: Key, done: asyncio.Future[_Entry]) -> None:
        self._flights.pop(key, None)
        if not done.cancelled() and done.exception() is None:
            self._entries[key] = done.result()

    # in a mint thread
    def _renew(self, secret: str, narrow: Narrow | None, sandbox_id: str | None,
               previous: _Entry | None) -> _Entry:
        now = time.time()
        try:
            current, sealed = self.vault.reveal_provider(secret, fresh=True)
        except VaultError as e:
            return _Entry(set(), None, None, now + RETRY_AFTER, str(e))
        if previous is not None and previous.usable(current.generation, now) and previous.value:
            return previous   # the asker knew an older version; this value is still right
        config = providers.from_text(sealed.reveal())
        if not config.spec.mints:
            return _Entry({current.generation}, None, None, now + RETRY_AFTER,
                          f"secret {secret} is a client certificate: the gateway presents it "
                          "with `as: mtls`, it has no value to inject")
        exchanges: list[transport.Exchange] = []
        try:
            current, minted = self._mint(secret, current, config, narrow, exchanges)
        except MintError as e:
            return self._failed(secret, current, previous, str(e), exchanges, sandbox_id)
        entry = _Entry({current.generation}, minted.value, minted.expires_at,
                       fresh_until(minted.expires_at, time.time()))
        if minted.rotated is not None:
            entry.generations |= self._store_rotated(secret, current, minted.rotated)
        self._state(secret, refreshed_at=_time(time.time()), expires_at=_time(minted.expires_at))
        self._audit(secret, exchanges, sandbox_id, None)
        return entry

    def _mint(self, secret: str, current: Current, config: ProviderConfig,
              narrow: Narrow | None,
              exchanges: list[transport.Exchange]) -> tuple[Current, Minted]:
        """Mint, and the version of the configuration it was minted from: when a refresh
        token was refused because another gateway (sharing the database) rotated it
        meanwhile, once more with the one that gateway stored."""
        try:
            return current, flows.mint(config, narrow, self._prepare(config, exchanges))
        except MintError:
            if config.kind != providers.OAUTH2_REFRESH_TOKEN:
                raise
            latest, sealed = self.vault.reveal_provider(secret, fresh=True)
            if latest.generation == current.generation:
                raise
            latest_config = providers.from_text(sealed.reveal())
            return latest, flows.mint(latest_config, narrow,
                                      self._prepare(latest_config, exchanges))

    def _prepare(self, config: ProviderConfig,
                 exchanges: list[transport.Exchange]) -> flows.Prepare:
        return self.connect(config.allowed_networks(), exchanges)

    def _store_rotated(self, secret: str, current: Current, rotated: ProviderConfig) -> set[str]:
        """The new refresh token, sealed, over the version it replaces (and only that)."""
        try:
            self.vault.put(secret, rotated.to_text(), provider=rotated.kind,
                           expect=current.generation)
        except VaultConflict:
            logger.warning("secret %s changed while its refresh token rotated; the new "
                           "configuration wins", secret)
            return set()
        latest = self.vault.current(secret, fresh=True)
        return {latest.generation} if latest is not None else set()

    def _failed(self, secret: str, current: Current, previous: _Entry | None, error: str,
                exchanges: list[transport.Exchange], sandbox_id: str | None) -> _Entry:
        logger.warning("secret %s: %s", secret, error)
        self._state(secret, error=error)
        self._audit(secret, exchanges, sandbox_id, error)
        now = time.time()
        if previous is not None and previous.value is not None and \
                previous.expires_at is not None and now < previous.expires_at - 1:
            # the value in hand is still valid: use it while trying again shortly
            return _Entry(previous.generations | {current.generation}, previous.value,
                          previous.expires_at, min(previous.expires_at - 1, now + RETRY_AFTER))
        return _Entry({current.generation}, None, None, now + RETRY_AFTER,
                      f"secret {secret}: {error}")

    def _state(self, secret: str, *, refreshed_at: datetime | None = None,
               expires_at: datetime | None = None, error: str | None = None) -> None:
        try:
            self.vault.set_state(secret, refreshed_at=refreshed_at, expires_at=expires_at,
                                 error=error)
        except Exception:
            logger.exception("cannot record the state of secret %s", secret)

    def _audit(self, secret: str, exchanges: list[transport.Exchange],
               sandbox_id: str | None, error: str | None) -> None:
        last = exchanges[-1] if exchanges else None
        self.record(dict(
            time=time.time(), sandbox_id=sandbox_id, decision="error" if error else "allow",
            reason="credential_unavailable" if error else "credential_refreshed",
            protocol="token", method=last.method if last else None,
            scheme="https" if last else None, host=last.host if last else None,
            port=last.port if last else None, path=last.path if last else None,
            status=last.status if last else None, upstream=last.upstream if last else None,
            duration_ms=last.duration_ms if last else None, secrets=secret, error=error))


def _time(epoch: float | None) -> datetime | None:
    return datetime.fromtimestamp(epoch, UTC) if epoch is not None else None
