"""Charges the bytes of allowed requests and streams to their rule's bytes-per-minute limit
(the request limit is taken before a request goes out, in authorize), and what a TCP stream
sends to its budgets, from its lease (an HTTP body's are charged as it streams, in
addons.bodies). A stream that would pass what its budgets have left is cut before those bytes
go; its end gives back what it leased and did not use."""

from __future__ import annotations

from contextlib import nullcontext

from mitmproxy import http, tcp

from gateway.dataplane.bodies import Counts
from gateway.dataplane.state import COUNTS_KEY, METADATA_KEY, GatewayState, flow_verdict
from policies.decision import Reason


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
        _end(flow)
        counts = flow.metadata.get(COUNTS_KEY)
        if isinstance(counts, Counts):
            self._charge(flow, counts.up + counts.down)
            return
        body_up = len(flow.request.raw_content or b"")
        body_down = len(flow.response.raw_content or b"") if flow.response else 0
        self._charge(flow, body_up + body_down)

    async def tcp_message(self, flow: tcp.TCPFlow) -> None:
        message = flow.messages[-1]
        self._charge(flow, len(message.content))
        if message.from_client and not await self._spend(flow, len(message.content)):
            message.content = b""

    async def websocket_message(self, flow: http.HTTPFlow) -> None:
        """WebSocket messages the sandbox sends count against the upgrade's budgets: a
        byte budget is not escaped by speaking WebSocket."""
        assert flow.websocket is not None
        message = flow.websocket.messages[-1]
        if message.dropped:         # the tripwire stopped it (addons.credentials): not sent
            return
        if message.from_client and not await self._spend(flow, len(message.content)):
            message.drop()

    async def _spend(self, flow: http.HTTPFlow | tcp.TCPFlow, size: int) -> bool:
        """A stream's bytes from the sandbox, spent from its lease (the hook waits for the
        next grant, gateway.dataplane.leases); False when its budgets have not got them (the
        stream is then refused and cut, those bytes not sent)."""
        verdict = flow_verdict(flow)
        conn = self.state.conns.get(flow.client_conn.id)
        lease = verdict.budgeted.lease if verdict and verdict.budgeted else None
        if lease is None or conn is None or verdict is None:
            return True
        # waiting for a grant: nothing more is read from the sandbox meanwhile
        with nullcontext() if lease.covers(size) else self.state.hold(flow.client_conn.id):
            granted = await lease.need(size)
        if granted:
            return True
        flow.metadata[METADATA_KEY] = verdict.redecided(
            conn.sandbox.policy.refuse(Reason.BUDGET_EXCEEDED, verdict.decision.rule),
            f"stream over its budget: {lease.used} bytes sent, {size} more not granted")
        flow.kill()
        return False

    # a stream's end gives back what it leased and did not send
    def error(self, flow: http.HTTPFlow) -> None:
        _end(flow)

    def websocket_end(self, flow: http.HTTPFlow) -> None:
        _end(flow)

    def tcp_end(self, flow: tcp.TCPFlow) -> None:
        _end(flow)

    def tcp_error(self, flow: tcp.TCPFlow) -> None:
        _end(flow)


def _end(flow: http.HTTPFlow | tcp.TCPFlow) -> None:
    verdict = flow_verdict(flow)
    if verdict is not None and verdict.budgeted is not None and \
            verdict.budgeted.lease is not None:
        verdict.budgeted.lease.end()
