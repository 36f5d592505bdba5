"""The only DNS the sandbox has: allowed names get a synthetic address from the sandbox's own
slice; every other name gets NXDOMAIN. Nothing is ever forwarded upstream, so a query cannot
carry data out."""

from __future__ import annotations

import logging

from mitmproxy import dns
from mitmproxy.net.dns import op_codes, response_codes, types

from gateway.flowstate import GatewayState, peer_ip
from gateway.registry import SandboxContext
from policies.decision import Decision, Reason, deny
from policies.hosts import HostError, normalise_name
from vault import placeholders

logger = logging.getLogger(__name__)


class DnsAnswer:
    def __init__(self, state: GatewayState, ttl: int = 60) -> None:
        self.state = state
        self.ttl = ttl

    def dns_request(self, flow: dns.DNSFlow) -> None:
        sandbox = self.state.registry.by_ip(peer_ip(flow.client_conn.peername))
        request = flow.request
        if sandbox is None:
            flow.response = request.fail(response_codes.REFUSED)
            self._record(None, deny(Reason.UNKNOWN_SANDBOX), request, None)
            return
        if request.op_code != op_codes.QUERY or len(request.questions) != 1:
            flow.response = request.fail(response_codes.NOTIMP)
            refusal = sandbox.policy.refuse(Reason.UNSUPPORTED_PROTOCOL)
            self._record(sandbox, refusal, request, None)
            return
        question = request.questions[0]
        leaked = self.state.registry.placeholders.lookup_all(
            placeholders.find(question.name.lower()))
        if leaked:
            # A placeholder spelt into a DNS label: never answered, never forwarded.
            self.state.quarantine(sandbox)
            flow.response = request.fail(response_codes.NXDOMAIN)
            self._record(sandbox, sandbox.policy.refuse(Reason.SECRET_EXFIL_ATTEMPT), request,
                         question.name, ",".join(sorted({b.secret for b in leaked.values()})))
            return
        try:
            name = normalise_name(question.name)
        except HostError:
            flow.response = request.fail(response_codes.NXDOMAIN)
            refusal = sandbox.policy.refuse(Reason.NO_MATCHING_RULE)
            self._record(sandbox, refusal, request, question.name)
            return
        decision = sandbox.policy.decide_name(name)
        if not decision.allowed:
            flow.response = request.fail(response_codes.NXDOMAIN)
        elif question.type == types.A:
            address = sandbox.pool.address_for(name)
            flow.response = request.succeed(
                [dns.ResourceRecord.A(question.name, address, ttl=self.ttl)])
        else:
            # The sandbox speaks IPv4 to synthetic addresses only: AAAA, TXT, MX, ANY... get
            # an empty answer, never upstream data.
            flow.response = request.succeed([])
        self._record(sandbox, decision, request, name)

    def _record(self, sandbox: SandboxContext | None, decision: Decision,
                request: dns.DNSMessage, name: str | None, secrets: str | None = None) -> None:
        first = request.questions[0] if request.questions else None
        self.state.record(decision, sandbox_id=sandbox.id if sandbox else None,
                          protocol="dns", method=types.to_str(first.type) if first else None,
                          host=name or (first.name if first else None), port=53,
                          secrets=secrets)
