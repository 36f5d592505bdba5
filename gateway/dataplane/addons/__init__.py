"""The gateway's mitmproxy addons, in pipeline order. Hooks run in this order, and before
mitmproxy's own addons."""

from __future__ import annotations

from gateway.dataplane.addons.audit_trail import AuditTrail
from gateway.dataplane.addons.bodies import Bodies
from gateway.dataplane.addons.credentials import Credentials
from gateway.dataplane.addons.http_policy import HttpPolicy
from gateway.dataplane.addons.identify import Identify
from gateway.dataplane.addons.mcp_on_demand import McpOnDemand
from gateway.dataplane.addons.one_at_a_time import OneAtATime
from gateway.dataplane.addons.rate_meter import RateMeter
from gateway.dataplane.addons.tcp_policy import TcpPolicy
from gateway.dataplane.addons.tls_guard import TlsGuard
from gateway.dataplane.addons.upstream_connect import UpstreamConnect
from gateway.dataplane.state import GatewayState

__all__ = ["pipeline"]


def pipeline(state: GatewayState) -> list[object]:
    """A proxy worker's addons (DNS is gateway.dataplane.dns, in the main process)."""
    credentials = Credentials(state)
    return [
        Identify(state),            # source address -> sandbox; unknown sources refused
        TlsGuard(state),            # SNI must name the dialed host
        HttpPolicy(state),          # Host must name the dialed host; policy; 403 JSON
        credentials,                # real values at their spots only; tripwire; scrubbing
        Bodies(state, credentials.trip),   # limits, tripwire and scrub in bodies, streamed
        McpOnDemand(state),         # rules with mcp: JSON-RPC per message, tools/list filtered
        OneAtATime(state),          # HTTP/1: nothing read while a request waits for its answer
        TcpPolicy(state),           # policy for non-HTTP streams
        UpstreamConnect(state),     # dial only vetted addresses
        RateMeter(state),           # bytes-per-minute limits
        AuditTrail(state),          # one row per request / stream
    ]
