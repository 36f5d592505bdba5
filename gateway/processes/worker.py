"""A proxy worker: `python -m gateway.processes.worker INDEX`, one of the `workers` that
`sandgate serve` starts. It serves transparent TCP on `transparent_port + INDEX` (nftables
spreads new connections over the workers) with a replica of the main process's registry
(gateway.processes.replica), and reaches the state all processes share through the hub
(gateway.processes.hub_client). It exits when the main process goes.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import signal
import sys

from gateway.control.policy_store import PolicyStore
from gateway.dataplane.proxy import build_master
from gateway.dataplane.registry import Registry
from gateway.dataplane.state import GatewayState
from gateway.dataplane.upstream import UpstreamResolver
from gateway.db import make_engine
from gateway.processes import background, protocol
from gateway.processes.hub_client import HubClient
from gateway.processes.replica import Replica
from gateway.settings import Settings
from sandbox_net import links
from vault.keyring import open_vault

logger = logging.getLogger(__name__)


async def _listen(hub: HubClient, replica: Replica) -> None:
    while line := await hub.reader.readline():
        message = protocol.decode(line)
        if isinstance(message, protocol.Answer):
            hub.answer(message)
            continue
        replica.apply(message)
        ack = getattr(message, "ack", None)
        if ack is not None:
            hub.send(protocol.Ack(ack=ack))


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

    def reopen_vault() -> None:
        state.vault = open_vault(engine, settings.key_source)

    replica = Replica(state, policies, reopen_vault)

    def ready() -> None:
        state.ready = True
        hub.send(protocol.Ready())

    proxy = build_master(settings, state, tcp_port=settings.transparent_port + index,
                         on_ready=ready)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, proxy.shutdown)
    listener = asyncio.ensure_future(_listen(hub, replica))
    listener.add_done_callback(lambda _task: proxy.shutdown())   # the main process is gone
    reload_task = asyncio.ensure_future(background.reload_policies(policies))
    try:
        await proxy.run()
    finally:
        reload_task.cancel()
        listener.cancel()
        state.vault.flush_usage()
        await hub.close()     # its last audit rows too


def main() -> None:
    logging.basicConfig(level=logging.WARNING,
                        format=f"worker {sys.argv[1]}: %(levelname)s %(name)s: %(message)s")
    asyncio.run(run(Settings(), int(sys.argv[1])))


if __name__ == "__main__":
    main()
