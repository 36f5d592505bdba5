"""The gateway's mitmproxy addons, in pipeline order. Hooks run in this order, and before
mitmproxy's own addons."""

from __future__ import annotations

from gateway.addons.audit_trail import AuditTrail
from gateway.addons.credentials import Credentials
from gateway.addons.dns_answer import DnsAnswer
from gateway.addons.http_policy import HttpPolicy
from gateway.addons.identify import Identify
from gateway.addons.rate_meter import RateMeter
from gateway.addons.tcp_policy import TcpPolicy
from gateway.addons.tls_guard import TlsGuard
from gateway.addons.upstream_connect import UpstreamConnect
from gateway.flowstate import GatewayState

__all__ = ["pipeline"]


def pipeline(state: GatewayState, *, dns_ttl: int = 60, dns: bool = True,
             tcp: bool = True) -> list[object]:
    """The addons for a process serving DNS, TCP (a proxy worker), or both."""
    addons: list[object] = [Identify(state)]   # source address -> sandbox; unknown refused
    if dns:
        addons.append(DnsAnswer(state, dns_ttl))  # synthetic answers for allowed names
    if tcp:
        addons += [
            TlsGuard(state),            # SNI must name the dialed host
            HttpPolicy(state),          # Host must name the dialed host; policy; 403 JSON
            Credentials(state),         # placeholders -> secrets where bound; tripwire; scrubbing
            TcpPolicy(state),           # policy for non-HTTP streams
            UpstreamConnect(state),     # dial only vetted addresses
            RateMeter(state),           # bytes-per-minute limits
            AuditTrail(state),          # one row per request / stream
        ]
    return addons
