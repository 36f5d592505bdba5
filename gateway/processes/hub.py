"""The main process's end of the proxy workers' connections (a Unix socket carrying the
messages of gateway.processes.protocol).

Workers' questions are answered from the Authority, their audit rows go to the audit writer.
The hub tells every worker of each registry change; `Add`, `Remove` and `VaultChanged` wait
for every worker's `Ack`, so a sandbox is known to all workers before it starts, and
forgotten by all before its address can be handed out again.

Messages from one worker are handled in order: a worker sends a connection's audit rows
(batched, gateway.processes.hub_client) before it releases the connection, so once the
count drops the rows are in the audit writer.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import signal
import threading
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway.approvals.ask import Outcome
from gateway.audit.writer import AuditWriter
from gateway.dataplane.registry import Registry, RegistryListener, SandboxContext
from gateway.processes import protocol
from gateway.processes.authority import Authority, audit_row
from gateway.processes.budgets import Allowance, Cap, Grant
from gateway.readiness import Readiness
from gateway.timing import ACK_TIMEOUT
from policies.schema import Narrow

if TYPE_CHECKING:
    from gateway.providers.broker import Broker

logger = logging.getLogger(__name__)


def snapshot(sandbox: SandboxContext) -> protocol.SandboxSnapshot:
    return protocol.SandboxSnapshot(
        id=sandbox.id, ip=sandbox.ip, policy=str(sandbox.handle.path),
        network=str(sandbox.pool.network), assignments=sandbox.pool.assignments(),
        env=sandbox.env, secrets=sandbox.secrets, owner=sandbox.owner,
        quarantined=sandbox.quarantined, pod=sandbox.pod, pod_uid=sandbox.pod_uid)


def _caps(plain: list[dict[str, Any]]) -> list[Cap]:
    return [Cap(**cap) for cap in plain]


@dataclass(eq=False)
class _Peer:
    index: int
    holder: str
    pid: int
    writer: asyncio.StreamWriter
    listening: bool = False     # its proxy listens (Ready)
    synced: bool = False        # it applied the registry snapshot (the Ack of Synced)
    sync_ack: int | None = None
    acks: dict[int, asyncio.Future[None]] = field(default_factory=dict)

    @property
    def ready(self) -> bool:
        return self.listening and self.synced

    def send(self, message: protocol.Message) -> None:
        if not self.writer.is_closing():
            self.writer.write(protocol.encode(message))


type Handler = Callable[[_Peer, Any], None]


class Hub(RegistryListener):
    def __init__(self, authority: Authority, audit: AuditWriter, registry: Registry,
                 path: Path, readiness: Readiness | None = None,
                 broker: Broker | None = None) -> None:
        self.authority = authority
        self.broker = broker
        self._minting: set[asyncio.Task[None]] = set()
        self._approving: set[asyncio.Task[None]] = set()
        self._budgeting: set[asyncio.Task[None]] = set()
        self.readiness = readiness
        self.audit = audit
        self.registry = registry
        self.path = path
        self.peers: dict[str, _Peer] = {}
        self.loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._next_ack = 0
        self._loop_thread = 0
        self._handlers: dict[type[Any], Handler] = {
            protocol.Release: lambda peer, m: authority.release_for(peer.holder, m.sandbox),
            protocol.Acquire: lambda peer, m: peer.send(protocol.Answer(
                m.id, authority.acquire_for(peer.holder, m.sandbox, m.limit))),
            protocol.Admit: lambda peer, m: peer.send(protocol.Answer(
                m.id, authority.admit(m.sandbox, m.rule, m.limits))),
            protocol.BudgetAsk: self._budget,
            protocol.Lease: self._lease,
            protocol.Unlease: lambda _peer, m: authority.unlease(m.sandbox, m.policy,
                                                                 _caps(m.caps), m.size, m.at),
            protocol.Spend: lambda _peer, m: authority.spend(m.sandbox, m.policy, _caps(m.caps),
                                                             m.size),
            protocol.NameFor: lambda peer, m: peer.send(protocol.Answer(
                m.id, authority.name_for(m.sandbox, m.address))),
            protocol.Charge: lambda _peer, m: authority.charge(m.sandbox, m.rule, m.limits,
                                                               m.size),
            protocol.Active: lambda _peer, m: authority.active(m.sandbox),
            protocol.Quarantine: lambda _peer, m: authority.quarantine(m.sandbox),
            protocol.Mint: self._mint,
            protocol.Approve: self._approve,
            protocol.Ack: self._acknowledged,
            protocol.Ready: self._ready,
        }

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self.path.unlink(missing_ok=True)
        self._server = await asyncio.start_unix_server(self._serve, str(self.path),
                                                       limit=2**24)
        self.path.chmod(0o600)
        self.registry.listener = self

    def ready_workers(self) -> int:
        return len({peer.index for peer in self.peers.values() if peer.ready})

    async def close(self, timeout: float = 10.0) -> None:
        """After the workers stopped: read what they sent before they went (their last audit
        rows), then stop listening."""
        deadline = asyncio.get_running_loop().time() + timeout
        while self.peers and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.01)
        if self._server is not None:
            self._server.close()
        self.path.unlink(missing_ok=True)

    # one worker's connection
    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            hello = protocol.decode(await reader.readline())
        except protocol.ProtocolError:
            hello = None
        if not isinstance(hello, protocol.Hello):
            writer.close()
            return
        # The holder names this connection, not the index: a replacement worker must not
        # inherit (or, on its predecessor's clean-up, lose) connection counts.
        peer = _Peer(hello.worker, f"worker-{hello.worker}-{hello.pid}", hello.pid, writer)
        # No await between the snapshot and joining `peers`: every later change reaches it.
        for sandbox in self.registry.all():
            peer.send(protocol.Add(snapshot(sandbox)))
        self._next_ack += 1
        peer.sync_ack = self._next_ack
        peer.send(protocol.Synced(ack=peer.sync_ack))
        self.peers[peer.holder] = peer
        try:
            while line := await reader.readline():
                message = protocol.decode(line)
                if isinstance(message, protocol.Record):
                    await self._record(message)
                else:
                    self._handle(peer, message)
        except (ConnectionError, asyncio.IncompleteReadError, protocol.ProtocolError):
            logger.exception("worker %s connection failed", peer.holder)
        finally:
            if self.peers.get(peer.holder) is peer:
                del self.peers[peer.holder]
            self._changed()
            self.authority.forget_holder(peer.holder)
            for waiter in peer.acks.values():
                if not waiter.done():
                    waiter.set_result(None)
            writer.close()

    def _handle(self, peer: _Peer, message: protocol.Message) -> None:
        handler = self._handlers.get(type(message))
        if handler is None:
            logger.error("worker %s sent an unexpected %s", peer.holder, type(message).__name__)
            return
        handler(peer, message)

    async def _record(self, message: protocol.Record) -> None:
        """Into the audit queue, in order; when it is full, wait for room in a thread: this
        worker's messages wait (and the worker, its socket full, slows down), the event loop
        does not."""
        for values in message.rows:
            row = audit_row(protocol.record_row(values))
            if not self.audit.offer(**row):
                await asyncio.to_thread(self.audit.record, **row)

    def _mint(self, peer: _Peer, message: protocol.Mint) -> None:
        """Answered when the broker has the value: the worker's other messages go on
        meanwhile (a mint may take a token endpoint's round trip)."""
        task = asyncio.ensure_future(self._answer_mint(peer, message))
        self._minting.add(task)
        task.add_done_callback(self._minting.discard)

    async def _answer_mint(self, peer: _Peer, message: protocol.Mint) -> None:
        answer: dict[str, Any] = {"value": None, "fresh_until": 0.0,
                                  "error": "this gateway mints no credentials"}
        try:
            if self.broker is not None:
                narrow = Narrow.model_validate(message.narrow) if message.narrow else None
                credential = await self.broker.credential(message.secret, message.generation,
                                                          narrow, message.sandbox)
                answer = {"value": credential.value.reveal() if credential.value else None,
                          "fresh_until": credential.fresh_until, "error": credential.error}
        except Exception:
            logger.exception("minting secret %s failed", message.secret)
            answer["error"] = f"secret {message.secret}: the gateway failed to mint it"
        peer.send(protocol.Answer(message.id, answer))

    def _budget(self, peer: _Peer, message: protocol.BudgetAsk) -> None:
        """A task: a budget's first count reads the audit log (in a thread); meanwhile the
        worker's other messages go on."""
        async def answer() -> None:
            try:
                allowance = await self.authority.budget(message.sandbox, message.policy,
                                                        _caps(message.caps), message.expected,
                                                        message.lease)
            except Exception:   # never leave the request waiting for an answer
                logger.exception("counting a budget of %s failed", message.sandbox)
                allowance = Allowance(refused="the gateway failed to count this budget")
            peer.send(protocol.Answer(message.id, allowance.plain()))
        self._task(answer())

    def _lease(self, peer: _Peer, message: protocol.Lease) -> None:
        async def answer() -> None:
            try:
                grant = await self.authority.lease(message.sandbox, message.policy,
                                                   _caps(message.caps), message.want)
            except Exception:   # refused what it asked: the stream is cut, not left waiting
                logger.exception("leasing a budget of %s failed", message.sandbox)
                grant = Grant(0, 0.0, spent=True)
            peer.send(protocol.Answer(message.id, grant.plain()))
        self._task(answer())

    def _task(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(work)
        self._budgeting.add(task)
        task.add_done_callback(self._budgeting.discard)

    def _approve(self, peer: _Peer, message: protocol.Approve) -> None:
        """Answered when a person decides or the time is up: only the asking flow waits."""
        task = asyncio.ensure_future(self._answer_approve(peer, message))
        self._approving.add(task)
        task.add_done_callback(self._approving.discard)

    async def _answer_approve(self, peer: _Peer, message: protocol.Approve) -> None:
        try:
            outcome = await self.authority.approve(message.ask)
        except Exception:   # never leave the request waiting for an answer that cannot come
            logger.exception("asking for approval of a request of %s failed",
                             message.ask.sandbox)
            outcome = Outcome(False, "approval_denied",
                              detail="the gateway failed to ask for approval")
        peer.send(protocol.Answer(message.id, dataclasses.asdict(outcome)))

    def _acknowledged(self, peer: _Peer, message: protocol.Ack) -> None:
        if message.ack == peer.sync_ack:
            peer.synced = True
            self._changed()
        waiter = peer.acks.pop(message.ack, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _ready(self, peer: _Peer, _message: protocol.Ready) -> None:
        peer.listening = True
        self._changed()

    def _changed(self) -> None:
        if self.readiness is not None:
            self.readiness.update(self.ready_workers())

    # registry changes, from any thread
    def added(self, sandbox: SandboxContext) -> None:
        self.tell(lambda ack: protocol.Add(snapshot(sandbox), ack), wait=True)

    def removed(self, sandbox: SandboxContext) -> None:
        self.tell(lambda ack: protocol.Remove(sandbox.id, ack), wait=True)
        self.authority.forget(sandbox.id)

    def quarantined(self, sandbox: SandboxContext) -> None:
        self.tell(lambda _ack: protocol.Quarantined(sandbox.id), wait=False)

    def assigned(self, sandbox: SandboxContext, address: str, name: str) -> None:
        self.tell(lambda _ack: protocol.Mapped(sandbox.id, address, name), wait=False)

    def vault_changed(self) -> None:
        self.tell(lambda ack: protocol.VaultChanged(ack), wait=True)

    def tell(self, make: Callable[[int | None], protocol.Message], *, wait: bool) -> None:
        """Send to every worker; with `wait`, block until all acknowledge (never on the
        event loop's own thread, where the message is sent without waiting)."""
        loop = self.loop
        if loop is None or loop.is_closed():
            return
        if threading.get_ident() == self._loop_thread:
            self._send_all(make, wait=False)
            return
        future = asyncio.run_coroutine_threadsafe(self._tell(make, wait), loop)
        with contextlib.suppress(Exception):
            future.result(timeout=ACK_TIMEOUT + 1)

    async def _tell(self, make: Callable[[int | None], protocol.Message], wait: bool) -> None:
        waiters = self._send_all(make, wait)
        if not waiters:
            return
        _done, pending = await asyncio.wait(waiters.values(), timeout=ACK_TIMEOUT)
        for peer, waiter in waiters.items():
            if waiter in pending:
                logger.error("worker %s did not acknowledge a registry change; killing it",
                             peer.holder)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(peer.pid, signal.SIGKILL)

    def _send_all(self, make: Callable[[int | None], protocol.Message],
                  wait: bool) -> dict[_Peer, asyncio.Future[None]]:
        waiters: dict[_Peer, asyncio.Future[None]] = {}
        ack = None
        if wait:
            self._next_ack += 1
            ack = self._next_ack
        message = make(ack)
        for peer in list(self.peers.values()):
            if ack is not None:
                waiter = asyncio.get_running_loop().create_future()
                peer.acks[ack] = waiter
                waiters[peer] = waiter
            peer.send(message)
        return waiters
