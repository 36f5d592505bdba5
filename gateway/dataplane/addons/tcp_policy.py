"""Non-HTTP TCP (and TLS that carries no HTTP): decided on name and port at stream start.
A refusal leaves no permit, so the upstream connect that follows is refused and the client's
connection closed."""

from __future__ import annotations

from mitmproxy import tcp

from gateway.dataplane.authorize import authorize, request_for
from gateway.dataplane.state import METADATA_KEY, GatewayState


class TcpPolicy:
    def __init__(self, state: GatewayState) -> None:
        self.state = state

    async def tcp_start(self, flow: tcp.TCPFlow) -> None:
        conn = self.state.conns.get(flow.client_conn.id)
        if conn is None:
            return
        protocol = "tls" if flow.client_conn.tls else "tcp"
        verdict = await authorize(self.state, conn, request_for(conn, protocol), stream=True)
        flow.metadata[METADATA_KEY] = verdict
        if not verdict.decision.allowed:
            # drop any permit an earlier HTTP request on this connection may have left
            conn.permits.clear()
