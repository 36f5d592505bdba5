"""The MCP guard, imported the first time a flow's rule has `mcp:`. Its MCP SDK types cost
each proxy worker 1.3 s of CPU at start-up, paid by every worker of every gateway (and every
`sandgate run` that starts one) though most policies have no `mcp:` rule. Until then a flow
cannot concern the guard: it looks only at flows whose allowing rule has `mcp:`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mitmproxy import http

from gateway.dataplane.state import GatewayState, flow_verdict

if TYPE_CHECKING:
    from gateway.dataplane.addons.mcp_guard import McpGuard


def _mcp_rule(flow: http.HTTPFlow) -> bool:
    verdict = flow_verdict(flow)
    grant = verdict.decision.grant if verdict is not None else None
    return grant is not None and grant.mcp is not None


class McpOnDemand:
    def __init__(self, state: GatewayState) -> None:
        self.state = state
        self.guard: McpGuard | None = None

    def _guard(self, flow: http.HTTPFlow) -> McpGuard | None:
        if self.guard is None and _mcp_rule(flow):
            from gateway.dataplane.addons.mcp_guard import McpGuard

            self.guard = McpGuard(self.state)
        return self.guard

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        if guard := self._guard(flow):
            guard.requestheaders(flow)

    def request(self, flow: http.HTTPFlow) -> None:
        if guard := self._guard(flow):
            guard.request(flow)

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        if guard := self._guard(flow):
            guard.responseheaders(flow)

    def response(self, flow: http.HTTPFlow) -> None:
        if guard := self._guard(flow):
            guard.response(flow)
