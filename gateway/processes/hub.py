"""The main process's end of the proxy workers' connections (a Unix socket, JSON lines).

Workers ask (`acquire`, `admit`, `name_for`: answered with `re`) and tell (`release`,
`charge`, `quarantine`, `record`, `active`, `ready`); the hub answers from the Authority.
The hub tells every worker of each registry change (`add`, `remove`, `quarantine`, `map`,
`vault`). `add` and `remove` wait for every worker's `ack`, so a sandbox is known to all
workers before it starts, and forgotten by all before its address can be handed out again.

Messages from one worker are handled in order: a worker sends a connection's audit row
before it releases the connection, so once the count drops the row is in the audit writer.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gateway.dataplane.registry import Registry, RegistryListener, SandboxContext
from gateway.processes.authority import Authority
from policies.schema import Limits

logger = logging.getLogger(__name__)

ACK_TIMEOUT = 5.0   # seconds; a worker that does not acknowledge a change is killed


def snapshot(sandbox: SandboxContext) -> dict[str, Any]:
    """What a worker needs to build its replica of a sandbox."""
    return {
        "id": sandbox.id, "ip": sandbox.ip, "policy": str(sandbox.handle.path),
        "network": str(sandbox.pool.network), "assignments": sandbox.pool.assignments(),
        "env": sandbox.env, "secrets": sandbox.secrets, "owner": sandbox.owner,
        "quarantined": sandbox.quarantined,
    }


@dataclass(eq=False)
class _Peer:
    index: int
    holder: str
    pid: int
    writer: asyncio.StreamWriter
    ready: bool = False
    acks: dict[int, asyncio.Future[None]] = field(default_factory=dict)

    def send(self, message: dict[str, Any]) -> None:
        if not self.writer.is_closing():
            self.writer.write(json.dumps(message).encode() + b"\n")


class Hub(RegistryListener):
    def __init__(self, authority: Authority, registry: Registry, path: Path) -> None:
        self.authority = authority
        self.registry = registry
        self.path = path
        self.peers: dict[str, _Peer] = {}
        self.loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._next_ack = 0
        self._loop_thread = 0

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
        hello = json.loads(await reader.readline() or b"{}")
        if hello.get("op") != "hello":
            writer.close()
            return
        # The holder names this connection, not the index: a replacement worker must not
        # inherit (or, on its predecessor's clean-up, lose) connection counts.
        index, pid = int(hello["worker"]), int(hello["pid"])
        peer = _Peer(index, f"worker-{index}-{pid}", pid, writer)
        # No await between the snapshot and joining `peers`: every later change reaches it.
        for sandbox in self.registry.all():
            peer.send({"op": "add", "sandbox": snapshot(sandbox)})
        self.peers[peer.holder] = peer
        try:
            while line := await reader.readline():
                self._handle(peer, json.loads(line))
        except (ConnectionError, asyncio.IncompleteReadError, ValueError):
            logger.exception("worker %s connection failed", peer.holder)
        finally:
            if self.peers.get(peer.holder) is peer:
                del self.peers[peer.holder]
            self.authority.forget_holder(peer.holder)
            for waiter in peer.acks.values():
                if not waiter.done():
                    waiter.set_result(None)
            writer.close()

    def _handle(self, peer: _Peer, message: dict[str, Any]) -> None:
        op = message["op"]
        authority = self.authority
        if op == "record":
            fields = message["fields"]
            fields["time"] = datetime.fromtimestamp(fields["time"], UTC)
            authority.record(fields)
        elif op == "release":
            authority.release_for(peer.holder, message["sandbox"])
        elif op == "acquire":
            peer.send({"re": message["id"], "value": authority.acquire_for(
                peer.holder, message["sandbox"], message["limit"])})
        elif op == "admit":
            peer.send({"re": message["id"], "value": authority.admit(
                message["sandbox"], message["rule"], Limits(**message["limits"]))})
        elif op == "charge":
            authority.charge(message["sandbox"], message["rule"], Limits(**message["limits"]),
                             message["size"])
        elif op == "name_for":
            peer.send({"re": message["id"],
                       "value": authority.name_for(message["sandbox"], message["address"])})
        elif op == "active":
            authority.active(message["sandbox"])
        elif op == "quarantine":
            authority.quarantine(message["sandbox"])
        elif op == "ack":
            waiter = peer.acks.pop(message["ack"], None)
            if waiter is not None and not waiter.done():
                waiter.set_result(None)
        elif op == "ready":
            peer.ready = True
        else:
            logger.error("worker %s sent unknown op %r", peer.holder, op)

    # registry changes, from any thread
    def added(self, sandbox: SandboxContext) -> None:
        self.tell({"op": "add", "sandbox": snapshot(sandbox)}, wait=True)

    def removed(self, sandbox: SandboxContext) -> None:
        self.tell({"op": "remove", "sandbox": sandbox.id}, wait=True)

    def quarantined(self, sandbox: SandboxContext) -> None:
        self.tell({"op": "quarantine", "sandbox": sandbox.id}, wait=False)

    def assigned(self, sandbox: SandboxContext, address: str, name: str) -> None:
        self.tell({"op": "map", "sandbox": sandbox.id, "address": address, "name": name},
                  wait=False)

    def vault_changed(self) -> None:
        self.tell({"op": "vault"}, wait=True)

    def tell(self, message: dict[str, Any], *, wait: bool) -> None:
        """Send to every worker; with `wait`, block until all acknowledge (never on the
        event loop's own thread, where the message is sent without waiting)."""
        loop = self.loop
        if loop is None or loop.is_closed():
            return
        if threading.get_ident() == self._loop_thread:
            self._send_all(message, wait=False)
            return
        future = asyncio.run_coroutine_threadsafe(self._tell(message, wait), loop)
        with contextlib.suppress(Exception):
            future.result(timeout=ACK_TIMEOUT + 1)

    async def _tell(self, message: dict[str, Any], wait: bool) -> None:
        waiters = self._send_all(message, wait)
        if not waiters:
            return
        _done, pending = await asyncio.wait(waiters.values(), timeout=ACK_TIMEOUT)
        for peer, waiter in waiters.items():
            if waiter in pending:
                logger.error("worker %s did not acknowledge %s; killing it", peer.holder,
                             message["op"])
                with contextlib.suppress(ProcessLookupError):
                    os.kill(peer.pid, signal.SIGKILL)

    def _send_all(self, message: dict[str, Any],
                  wait: bool) -> dict[_Peer, asyncio.Future[None]]:
        waiters: dict[_Peer, asyncio.Future[None]] = {}
        if wait:
            self._next_ack += 1
            message = {**message, "ack": self._next_ack}
        for peer in list(self.peers.values()):
            if wait:
                waiter = asyncio.get_running_loop().create_future()
                peer.acks[self._next_ack] = waiter
                waiters[peer] = waiter
            peer.send(message)
        return waiters
