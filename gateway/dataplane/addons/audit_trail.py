"""One audit row per HTTP request and per non-HTTP TCP stream, written when it ends, with
its decision (set by the policy addons), status, bytes and duration. DNS answers and
connection-level refusals are recorded where they are decided."""

from __future__ import annotations

import time
from typing import Any

from mitmproxy import http, tcp, tls

from gateway.dataplane.bodies import Counts
from gateway.dataplane.mcp_exchange import MCP_KEY, McpExchange
from gateway.dataplane.records import header_summary, sent
from gateway.dataplane.state import (
    COUNTS_KEY,
    SENT_KEY,
    GatewayState,
    Sent,
    flow_verdict,
    peer_ip,
)
from policies.decision import Decision, Reason, Verdict, deny


def _upstream(flow: http.HTTPFlow | tcp.TCPFlow) -> str | None:
    peer = flow.server_conn.peername
    return f"{peer_ip(peer)}:{peer[1]}" if peer else None


class AuditTrail:
    def __init__(self, state: GatewayState) -> None:
        self.state = state

    # HTTP (each flow waits, after its row, while the audit log is behind)
    async def response(self, flow: http.HTTPFlow) -> None:
        self._http(flow, error=None)
        await self.state.coord.drained()

    async def error(self, flow: http.HTTPFlow) -> None:
        self._http(flow, error=flow.error.msg if flow.error else "error")
        await self.state.coord.drained()

    def _http(self, flow: http.HTTPFlow, error: str | None) -> None:
        if flow.metadata.get("sandgate.audited"):
            return
        flow.metadata["sandgate.audited"] = True
        verdict = flow_verdict(flow)
        conn = self.state.conns.get(flow.client_conn.id)
        decision = verdict.decision if verdict else deny(Reason.INTERNAL_ERROR)
        if error and decision.allowed:
            decision = decision.failed(Reason.UPSTREAM_ERROR)
        request, response = flow.request, flow.response
        end = response.timestamp_end if response and response.timestamp_end else time.time()
        as_sent = flow.metadata.get(SENT_KEY)
        as_sent = as_sent if isinstance(as_sent, Sent) else sent(request)
        counts = flow.metadata.get(COUNTS_KEY)
        up, down = (counts.up, counts.down) if isinstance(counts, Counts) else (
            len(request.raw_content or b""), len(response.raw_content or b"") if response else 0)
        fields: dict[str, Any] = dict(
            sandbox_id=conn.sandbox.id if conn else None,
            conn=conn,
            protocol="ws" if flow.websocket is not None else
                     "h2" if request.is_http2 else "http",
            method=request.method,
            scheme=request.scheme,
            host=verdict.host if verdict else (conn.target if conn else None),
            port=verdict.port if verdict else request.port,
            path=as_sent.path,
            query=as_sent.query,
            request_headers=as_sent.headers,
            response_headers=header_summary(response.headers) if response else None,
            status=response.status_code if response else None,
            bytes_up=up,
            bytes_down=down,
            duration_ms=round((end - request.timestamp_start) * 1000, 3),
            upstream=_upstream(flow) if decision.allowed else None,
            sni=flow.client_conn.sni,
            secrets=",".join(verdict.secrets) if verdict and verdict.secrets else None,
            error=error or (verdict.error if verdict else None),
        )
        exchange = flow.metadata.get(MCP_KEY)
        calls = exchange.calls if isinstance(exchange, McpExchange) else []
        if not calls:
            self.state.record(decision, **fields)
            return
        # one row per JSON-RPC message (a batch has several), each with its own decision
        # unless it went out with the exchange; the exchange's bytes are counted once
        for i, (method, tool, own) in enumerate(calls):
            if i:
                fields.update(bytes_up=0, bytes_down=0)
            self.state.record(own if own.verdict != Verdict.ALLOW else decision,
                              mcp_method=method, mcp_tool=tool, **fields)

    # raw TCP
    async def tcp_end(self, flow: tcp.TCPFlow) -> None:
        self._tcp(flow, error=None)
        await self.state.coord.drained()

    async def tcp_error(self, flow: tcp.TCPFlow) -> None:
        self._tcp(flow, error=flow.error.msg if flow.error else "error")
        await self.state.coord.drained()

    def _tcp(self, flow: tcp.TCPFlow, error: str | None) -> None:
        verdict = flow_verdict(flow)
        conn = self.state.conns.get(flow.client_conn.id)
        if verdict is None or conn is None:
            return  # refused before the stream started; recorded there
        decision = verdict.decision
        if error and decision.allowed:
            decision = decision.failed(Reason.UPSTREAM_ERROR)
        up = sum(len(m.content) for m in flow.messages if m.from_client)
        down = sum(len(m.content) for m in flow.messages if not m.from_client)
        self.state.record(
            decision,
            sandbox_id=conn.sandbox.id,
            conn=conn,
            protocol="tls" if flow.client_conn.tls else "tcp",
            host=verdict.host, port=verdict.port,
            bytes_up=up, bytes_down=down,
            duration_ms=round((time.time() - conn.started) * 1000, 3),
            upstream=_upstream(flow) if decision.allowed else None,
            sni=flow.client_conn.sni,
            error=error or verdict.error,
        )

    # TLS handshakes the sandbox abandoned (for example, it does not trust the gateway CA)
    def tls_failed_client(self, data: tls.TlsData) -> None:
        conn = self.state.conns.get(data.context.client.id)
        if conn is None or conn.refused is not None:
            return
        policy = conn.sandbox.policy
        self.state.record(
            Decision(Verdict.ERROR, Reason.CLIENT_TLS_FAILED, None, policy.name, policy.version),
            sandbox_id=conn.sandbox.id, conn=conn, protocol="tls", host=conn.target,
            port=conn.dialed_port, sni=data.conn.sni,
            error=f"client TLS handshake failed: {data.conn.error}",
        )
