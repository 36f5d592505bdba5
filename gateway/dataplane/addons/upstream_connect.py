"""The gate every upstream connection passes: it dials only an address vetted for the name
behind the sandbox's dialed synthetic address, with that name as SNI. Whatever the layers
above decided or failed to decide, nothing else leaves."""

from __future__ import annotations

import logging

from mitmproxy.proxy import server_hooks

from gateway.dataplane.state import GatewayState, peer_ip

logger = logging.getLogger(__name__)


class UpstreamConnect:
    def __init__(self, state: GatewayState) -> None:
        self.state = state

    def server_connect(self, data: server_hooks.ServerConnectionHookData) -> None:
        conn = self.state.conns.get(data.client.id)
        address = data.server.address
        if conn is None or address is None or conn.refused is not None:
            data.server.error = "sandgate: connection refused by policy"
            return
        ip, port = peer_ip(address), int(address[1])
        vetted = conn.permits.get((conn.target, conn.dialed_port))
        # The HTTP addon points allowed requests at the vetted address (so upstream
        # connections are reused); a raw stream still names the dialed synthetic address.
        if vetted is None or port != conn.dialed_port or \
                ip not in (conn.dialed_ip, str(vetted.address)):
            data.server.error = "sandgate: no allow decision for this destination"
            logger.info("refused upstream connect to %s:%s for sandbox %s",
                        ip, port, conn.sandbox.id)
            return
        data.server.address = (str(vetted.address), port)
        # SNI is the name behind the dialed address, whatever the client sent; an allowed
        # IP-literal destination gets none (an IP is not a server name).
        data.server.sni = conn.name
