"""A proxy worker: `python -m gateway.processes.worker INDEX`, one of the `workers` that `sandgate
serve` starts. It serves transparent TCP on `transparent_port + INDEX` (nftables spreads new
connections over the workers) with a replica of the main process's registry, and reaches the
state all processes share through the hub (gateway.processes.hub). It exits when the main
process goes.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import os
import signal
import sys
import time
from typing import Any

from gateway.control.policy_store import PolicyStore, watch
from gateway.dataplane.proxy import build_master
from gateway.dataplane.registry import Registry, SandboxContext, SyntheticPool
from gateway.dataplane.state import GatewayState
from gateway.dataplane.upstream import UpstreamResolver
from gateway.db import make_engine
from gateway.settings import Settings
from policies.schema import Limits
from sandbox_net import links
from vault.keyring import open_vault

logger = logging.getLogger(__name__)

ACTIVE_EVERY = 1.0   # seconds: how often a busy sandbox's activity is reported


class HubClient:
    """The worker's Coordinator (gateway.processes.authority): every call goes to the hub."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._next = 0
        self._active: dict[str, float] = {}

    @classmethod
    async def connect(cls, settings: Settings, index: int) -> HubClient:
        reader, writer = await asyncio.open_unix_connection(str(settings.hub_socket),
                                                            limit=2**24)
        client = cls(reader, writer)
        client.send({"op": "hello", "worker": index, "pid": os.getpid()})
        return client

    def send(self, message: dict[str, Any]) -> None:
        self.writer.write(json.dumps(message).encode() + b"\n")

    async def _ask(self, op: str, **fields: Any) -> Any:
        self._next += 1
        future = asyncio.get_running_loop().create_future()
        self._pending[self._next] = future
        self.send({"op": op, "id": self._next, **fields})
        return await future

    def answer(self, message: dict[str, Any]) -> None:
        future = self._pending.pop(message["re"], None)
        if future is not None and not future.done():
            future.set_result(message["value"])

    # Coordinator
    async def acquire(self, sandbox_id: str, limit: int) -> bool:
        return bool(await self._ask("acquire", sandbox=sandbox_id, limit=limit))

    def release(self, sandbox_id: str) -> None:
        self.send({"op": "release", "sandbox": sandbox_id})

    async def admit(self, sandbox_id: str, rule: str, limits: Limits) -> bool:
        return bool(await self._ask("admit", sandbox=sandbox_id, rule=rule,
                                    limits=limits.model_dump()))

    def charge(self, sandbox_id: str, rule: str, limits: Limits, size: int) -> None:
        self.send({"op": "charge", "sandbox": sandbox_id, "rule": rule,
                    "limits": limits.model_dump(), "size": size})

    def quarantine(self, sandbox_id: str) -> None:
        self.send({"op": "quarantine", "sandbox": sandbox_id})

    async def name_for(self, sandbox_id: str, address: str) -> str | None:
        name = await self._ask("name_for", sandbox=sandbox_id, address=address)
        return str(name) if name is not None else None

    def record(self, fields: dict[str, Any]) -> None:
        self.send({"op": "record", "fields": {**fields, "time": time.time()}})

    async def drained(self) -> None:
        # Returns at once unless the socket's buffer is over its high-water mark: the main
        # process has stopped reading because its audit queue is full.
        with contextlib.suppress(ConnectionError):   # gone: this worker is stopping anyway
            await self.writer.drain()

    def active(self, sandbox_id: str) -> None:
        now = time.monotonic()
        if now - self._active.get(sandbox_id, 0.0) >= ACTIVE_EVERY:
            self._active[sandbox_id] = now
            self.send({"op": "active", "sandbox": sandbox_id})


class Replica:
    """Applies the hub's registry changes to this worker's registry."""

    def __init__(self, state: GatewayState, policies: PolicyStore, settings: Settings) -> None:
        self.state = state
        self.policies = policies
        self.settings = settings

    def apply(self, message: dict[str, Any]) -> None:
        registry = self.state.registry
        op = message["op"]
        if op == "add":
            self._add(message["sandbox"])
        elif op == "remove":
            registry.remove(message["sandbox"])
        elif op == "quarantine":
            sandbox = registry.by_id(message["sandbox"])
            if sandbox is not None:
                sandbox.quarantined = True
        elif op == "map":
            sandbox = registry.by_id(message["sandbox"])
            if sandbox is not None:
                sandbox.pool.learn(message["address"], message["name"])
        elif op == "vault":
            engine = make_engine(self.settings.db_url)
            self.state.vault = open_vault(engine, self.settings.key_source)

    def _add(self, data: dict[str, Any]) -> None:
        registry = self.state.registry
        registry.remove(data["id"])
        stale = registry.by_ip(data["ip"])
        if stale is not None:   # its removal was missed (cannot happen in order; be sure)
            registry.remove(stale.id)
        pool = SyntheticPool(ipaddress.IPv4Network(data["network"]))
        for address, name in data["assignments"].items():
            pool.learn(address, name)
        try:
            handle = self.policies.acquire(data["policy"])
        except Exception:
            # Fail closed: without its policy this worker refuses the sandbox as unknown.
            logger.exception("worker cannot load policy %s of sandbox %s", data["policy"],
                             data["id"])
            return
        registry.add(SandboxContext(
            id=data["id"], ip=data["ip"], handle=handle, pool=pool, env=data["env"],
            secrets=data["secrets"], quarantined=data["quarantined"], owner=data["owner"]))


async def _listen(hub: HubClient, replica: Replica) -> None:
    while line := await hub.reader.readline():
        message = json.loads(line)
        if "re" in message:
            hub.answer(message)
            continue
        replica.apply(message)
        if "ack" in message:
            hub.send({"op": "ack", "ack": message["ack"]})


async def run(settings: Settings, index: int) -> None:
    hub = await HubClient.connect(settings, index)
    engine = make_engine(settings.db_url)
    own = [a for a in await asyncio.to_thread(links.host_addresses) if not a.startswith("127.")]
    resolver = UpstreamResolver(settings.upstream_resolver,
                                own_addresses=[ipaddress.IPv4Address(a) for a in own])
    state = GatewayState(Registry(), resolver, hub)
    state.vault = open_vault(engine, settings.key_source)
    state.quarantine_on_exfil = settings.quarantine_on_exfil
    policies = PolicyStore(settings.policy_dir)
    replica = Replica(state, policies, settings)

    def ready() -> None:
        state.ready = True
        hub.send({"op": "ready"})

    proxy = build_master(settings, state, tcp_port=settings.transparent_port + index,
                         on_ready=ready)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, proxy.shutdown)
    listener = asyncio.ensure_future(_listen(hub, replica))
    listener.add_done_callback(lambda _task: proxy.shutdown())   # the main process is gone
    reload_task = asyncio.ensure_future(watch(policies))
    try:
        await proxy.run()
    finally:
        reload_task.cancel()
        listener.cancel()
        state.vault.flush_usage()
        with contextlib.suppress(ConnectionError):
            await hub.writer.drain()
        hub.writer.close()


def main() -> None:
    logging.basicConfig(level=logging.WARNING,
                        format=f"worker {sys.argv[1]}: %(levelname)s %(name)s: %(message)s")
    asyncio.run(run(Settings(), int(sys.argv[1])))


if __name__ == "__main__":
    main()
