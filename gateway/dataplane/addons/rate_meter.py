"""Charges the bytes of allowed requests and streams to their rule's bytes-per-minute limit
(the request limit is taken before a request goes out, in authorize), and what a TCP stream
sends to its budgets (an HTTP body's are charged as it streams, in addons.bodies). A stream
that would pass what its budgets have left is cut before those bytes go."""

from __future__ import annotations

from mitmproxy import http, tcp

from gateway.dataplane.bodies import Counts
from gateway.dataplane.state import COUNTS_KEY, METADATA_KEY, GatewayState, flow_verdict
from policies.decision import Reason

SENT_UP_KEY = "sandgate.sent_up"    # bytes a stream's client sent, for its budgets


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
        message = flow.messages[-1]
        self._charge(flow, len(message.content))
        if message.from_client and not self._spend(flow, len(message.content)):
            message.content = b""

    def websocket_message(self, flow: http.HTTPFlow) -> None:
        """WebSocket messages the sandbox sends count against the upgrade's budgets: a
        byte budget is not escaped by speaking WebSocket."""
        assert flow.websocket is not None
        message = flow.websocket.messages[-1]
        if message.dropped:         # the tripwire stopped it (addons.credentials): not sent
            return
        if message.from_client and not self._spend(flow, len(message.content)):
            message.drop()

    def _spend(self, flow: http.HTTPFlow | tcp.TCPFlow, size: int) -> bool:
        """A stream's bytes from the sandbox, charged to its budgets; False when they would
        pass what was left (the stream is then refused and cut, those bytes not sent)."""
        verdict = flow_verdict(flow)
        conn = self.state.conns.get(flow.client_conn.id)
        budgeted = verdict.budgeted if verdict is not None else None
        if budgeted is None or conn is None or verdict is None:
            return True
        sent = flow.metadata.get(SENT_UP_KEY, 0) + size
        flow.metadata[SENT_UP_KEY] = sent
        if budgeted.left is not None and sent > budgeted.left:
            flow.metadata[METADATA_KEY] = verdict.redecided(
                conn.sandbox.policy.refuse(Reason.BUDGET_EXCEEDED, verdict.decision.rule),
                f"stream over the {budgeted.left} bytes left in its budget")
            flow.kill()
            return False
        self.state.coord.spend(conn.sandbox.id, budgeted.policy, list(budgeted.caps), size)
        return True
