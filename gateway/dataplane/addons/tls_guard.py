"""TLS ClientHello check: the SNI must name the host behind the dialed synthetic address.

A mismatch (domain fronting), a missing SNI, or TLS to an address the gateway's DNS never
handed out is refused before the handshake: the connection is marked refused and handed to a
pass-through layer whose upstream connect our server_connect gate then refuses, so the client
sees the connection close and nothing reaches any upstream."""

from __future__ import annotations

from mitmproxy import tls

from gateway.dataplane.state import GatewayState
from policies.decision import Decision, Reason
from policies.hosts import HostError, normalise_name
from policies.matcher import CompiledPolicy


class TlsGuard:
    def __init__(self, state: GatewayState) -> None:
        self.state = state

    def tls_clienthello(self, data: tls.ClientHelloData) -> None:
        conn = self.state.conns.get(data.context.client.id)
        if conn is None:
            data.ignore_connection = True  # server_connect refuses unknown connections
            return
        sni = data.client_hello.sni
        refusal = _check(conn.name, sni, conn.sandbox.policy)
        if refusal is None:
            return
        conn.refused = refusal
        data.ignore_connection = True
        self.state.record(refusal, sandbox_id=conn.sandbox.id, conn=conn, protocol="tls",
                          host=conn.name or conn.dialed_ip, port=conn.dialed_port, sni=sni,
                          error=f"TLS SNI {sni!r} on a connection to {conn.target}")


def _check(name: str | None, sni: str | None, policy: CompiledPolicy) -> Decision | None:
    """The refusal for this ClientHello, or None when the SNI names the dialed host.

    An IP-literal destination (no name) passes here: only an address rule can allow it, and
    the HTTP or TCP decision that follows consults those."""
    if name is None:
        return None
    if not sni:
        return policy.refuse(Reason.MISSING_SNI)
    try:
        if normalise_name(sni) == name:
            return None
    except HostError:
        pass
    return policy.refuse(Reason.SNI_MISMATCH)
