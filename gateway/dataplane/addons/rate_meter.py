"""Charges the bytes of allowed requests and streams to their rule's bytes-per-minute limit
(the request limit is taken before a request goes out, in authorize)."""

from __future__ import annotations

from mitmproxy import http, tcp

from gateway.dataplane.bodies import Counts
from gateway.dataplane.state import COUNTS_KEY, GatewayState, flow_verdict


class RateMeter:
    def __init__(self, state: GatewayState) -> None:
        self.state = state

    def _charge(self, flow: http.HTTPFlow | tcp.TCPFlow, size: int) -> None:
        verdict = flow_verdict(flow)
        conn = self.state.conns.get(flow.client_conn.id)
        if verdict is None or conn is None:
            return
        grant = verdict.decision.grant
        if grant is not None and grant.limits is not None and verdict.decision.rule:
            self.state.coord.charge(conn.sandbox.id, verdict.decision.rule, grant.limits,
                                    size)

    def response(self, flow: http.HTTPFlow) -> None:
        counts = flow.metadata.get(COUNTS_KEY)
        if isinstance(counts, Counts):
            self._charge(flow, counts.up + counts.down)
            return
        body_up = len(flow.request.raw_content or b"")
        body_down = len(flow.response.raw_content or b"") if flow.response else 0
        self._charge(flow, body_up + body_down)

    def tcp_message(self, flow: tcp.TCPFlow) -> None:
        self._charge(flow, len(flow.messages[-1].content))
