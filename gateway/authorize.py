"""The two-stage egress check shared by the HTTP and TCP addons: policy on the name, then
resolve once and vet the address. The vetted address becomes a permit on the connection;
server_connect dials permits and nothing else."""

from __future__ import annotations

from gateway.flowstate import Conn, FlowVerdict, GatewayState
from gateway.upstream import ResolveError
from policies.decision import Reason


async def authorize(state: GatewayState, conn: Conn) -> FlowVerdict:
    policy = conn.sandbox.policy
    port = conn.dialed_port
    if conn.refused is not None:
        return FlowVerdict(conn.refused, conn.target, port)
    if conn.name is None:
        # A real address the gateway's DNS never handed out: IP-literal dialing.
        return FlowVerdict(policy.refuse(Reason.NOT_FROM_GATEWAY_DNS), conn.dialed_ip, port)
    decision = policy.decide(conn.name, port)
    if not decision.allowed:
        return FlowVerdict(decision, conn.name, port)
    vetted = conn.permits.get((conn.name, port))
    if vetted is None:
        try:
            vetted = await state.resolver.resolve(conn.name)
        except ResolveError as e:
            return FlowVerdict(policy.refuse(e.reason, decision.rule), conn.name, port,
                               error=str(e))
        conn.permits[(conn.name, port)] = vetted
    return FlowVerdict(decision, conn.name, port, upstream=str(vetted.address))
