"""Who is asking: map each client connection's source address to a live sandbox.

An unknown source is refused before a byte is read (the nft rules only redirect sandbox
links here, so an unknown source is a stale sandbox or something that should not exist)."""

from __future__ import annotations

import logging
import time

from mitmproxy import connection

from gateway.dataplane.authorize import request_for
from gateway.dataplane.state import Conn, GatewayState, peer_ip
from policies.decision import Reason, deny

logger = logging.getLogger(__name__)


class Identify:
    def __init__(self, state: GatewayState) -> None:
        self.state = state

    async def client_connected(self, client: connection.Client) -> None:
        source = peer_ip(client.peername)
        sandbox = self.state.registry.by_ip(source)
        dialed_ip, dialed_port = peer_ip(client.sockname), int(client.sockname[1])
        if sandbox is None:
            client.error = "sandgate: unknown source"
            logger.warning("refused connection from unknown source %s", source)
            self.state.record(deny(Reason.UNKNOWN_SANDBOX), sandbox_id=None,
                              protocol="tcp",
                              host=dialed_ip, port=dialed_port,
                              error=f"unknown source {source}")
            return
        self.state.coord.active(sandbox.id)
        limit = sandbox.policy.limits.connections
        if not await self.state.coord.acquire(sandbox.id, limit):
            # One sandbox must not make the gateway hold unbounded connections for it.
            client.error = "sandgate: connection limit"
            self.state.record(sandbox.policy.refuse(Reason.CONNECTION_LIMIT),
                              sandbox_id=sandbox.id, protocol="tcp", host=dialed_ip,
                              port=dialed_port, error=f"over {limit} open connections")
            return
        name = sandbox.pool.name_for(dialed_ip)
        if name is None and dialed_ip in sandbox.pool:
            name = await self.state.coord.name_for(sandbox.id, dialed_ip)  # not heard yet
        self.state.conns[client.id] = Conn(sandbox=sandbox, dialed_ip=dialed_ip,
                                           dialed_port=dialed_port, name=name,
                                           client_id=client.id)

    def client_disconnected(self, client: connection.Client) -> None:
        conn = self.state.conns.pop(client.id, None)
        if conn is None:
            return
        if not conn.audited:
            # The sandbox connected but never sent enough for a protocol decision: still an
            # egress attempt, so it gets a row, decided on name and port alone.
            decision = conn.sandbox.policy.decide(request_for(conn, "tcp"))
            self.state.record(decision, sandbox_id=conn.sandbox.id, protocol="tcp",
                              host=conn.target, port=conn.dialed_port,
                              duration_ms=round((time.time() - conn.started) * 1000, 3),
                              error="closed before sending data")
        # After the row: once the count drops, a deletion may flush the audit log.
        self.state.coord.release(conn.sandbox.id)
