"""Bodies of allowed requests and their responses (gateway.dataplane.bodies does the looking).

A body whose Content-Length is within the scan window is held and checked whole: a broken
rule is then answered (403, 413, 502). Any other body (larger, chunked, HTTP/2 without a
length) streams through a checker and is never held: a broken rule cuts the connection, since
its headers went out already. Limits hold either way: `request_body_bytes` and
`response_body_bytes` of the sandbox's policy, on the bytes as sent and as decoded.

Framing: a streamed body whose length the gateway changes (a `body` injection going out
decoded, a scrubbed response) loses its Content-Length; a streamed request body without one
goes to an HTTP/1 upstream chunked (never unframed: that would let a body pass as a second
request), and to an HTTP/2 upstream as it is (chunked is no HTTP/2 framing).
"""

from __future__ import annotations

import json
from collections.abc import Callable

from mitmproxy import http, tls

from gateway.dataplane.bodies import (
    SCAN_WINDOW,
    SIGNED_BODY_LIMIT,
    Counts,
    Incoming,
    Outgoing,
    Refusal,
    content_length,
    pieces,
    whole,
)
from gateway.dataplane.denials import refuse
from gateway.dataplane.injection import NO_BODY
from gateway.dataplane.leases import StreamLease, Take
from gateway.dataplane.mcp_exchange import HOLD_LIMIT as MCP_HOLD_LIMIT
from gateway.dataplane.state import (
    COUNTS_KEY,
    METADATA_KEY,
    Conn,
    FlowVerdict,
    GatewayState,
    flow_secrets,
    flow_verdict,
)
from policies.decision import Reason

type Body = Outgoing | Incoming

CHECKED_KEY = "sandgate.body"     # the request's or response's checker, when held whole


def _no_body(request: http.Request, response: http.Response) -> bool:
    return request.method == "HEAD" or response.status_code in (204, 304) or \
        100 <= response.status_code < 200


def _held(message: http.Message, window: int = SCAN_WINDOW) -> bool:
    length = content_length(message.headers)
    return length is not None and length <= window


class Bodies:
    def __init__(self, state: GatewayState, on_trip: Callable[..., None]) -> None:
        self.state = state
        self.on_trip = on_trip          # the credentials addon's tripwire

    def _allowed(self, flow: http.HTTPFlow) -> tuple[Conn, FlowVerdict] | None:
        conn = self.state.conns.get(flow.client_conn.id)
        verdict = flow_verdict(flow)
        if conn is None or verdict is None or not verdict.decision.allowed:
            return None
        return conn, verdict

    @staticmethod
    def counts(flow: http.HTTPFlow) -> Counts:
        counts = flow.metadata.get(COUNTS_KEY)
        if not isinstance(counts, Counts):
            counts = flow.metadata[COUNTS_KEY] = Counts()
        return counts

    # requests
    def requestheaders(self, flow: http.HTTPFlow) -> None:
        allowed = self._allowed(flow)
        if allowed is None or flow.response is not None:
            return
        conn, verdict = allowed
        request, secrets = flow.request, flow_secrets(flow)
        h2 = request.is_http2 or request.is_http3
        unframed = "content-length" not in request.headers and \
            "transfer-encoding" not in request.headers
        if unframed and not h2:
            return              # HTTP/1 without either: no body
        # HTTP/2 without a length: a body may follow; for methods that carry none, any is
        # refused (it could only reach an HTTP/1 upstream unframed)
        limit = 0 if unframed and request.method in NO_BODY else \
            conn.sandbox.policy.limits.request_body_bytes
        body = Outgoing(limit, request.headers.get("content-encoding", ""),
                        self.state.registry.placeholders.lookup_all,
                        set(secrets.allowed_in_body), secrets.substitute, self.counts(flow))
        if secrets.needs_body and not _held(request, SIGNED_BODY_LIMIT):
            self._answer(flow, conn, Refusal(
                Reason.BODY_TOO_LARGE, "a SigV4 request signed over its body is held whole "
                f"to be signed again: give its length, at most {SIGNED_BODY_LIMIT} bytes, or "
                "sign with x-amz-content-sha256"))
            return
        # a body an `mcp:` rule reads (gateway.dataplane.addons.mcp_guard) is held up to its
        # own limit; McpGuard refuses what is larger
        grant = verdict.decision.grant
        window = MCP_HOLD_LIMIT if grant is not None and grant.mcp is not None else SCAN_WINDOW
        if _held(request, window) or secrets.needs_body:
            flow.metadata[CHECKED_KEY] = body
            return
        if secrets.substitute:      # the decoded body goes out, with the real value in it
            for name in ("content-encoding", "content-length"):
                request.headers.pop(name, None)
        if limit:
            self._frame(conn, request)
        request.stream = self._streamer(flow, conn, body, self._charger(flow, conn, verdict))

    def _charger(self, flow: http.HTTPFlow, conn: Conn,
                 verdict: FlowVerdict) -> Callable[[int], None]:
        """A streamed body's bytes spend its lease (gateway.dataplane.leases) before they go;
        on credit, the client connection is not read until the next grant comes, and an
        answer that does not cover what went on credit cuts the stream."""
        lease = verdict.budgeted.lease if verdict.budgeted is not None else None
        if lease is None:
            return lambda _size: None
        paused = False

        def answered(over: bool) -> None:
            nonlocal paused
            if paused:
                paused = False
                self.state.hold.resume(flow.client_conn.id)
            if over:
                self._mark(flow, conn, _over_budget(lease))
                self.state.cut(flow)

        lease.answered.append(answered)

        def charge(size: int) -> None:
            nonlocal paused
            taken = lease.take(size)
            if taken is Take.REFUSED:
                raise _over_budget(lease)
            if taken is Take.CREDIT and not paused:
                paused = self.state.hold.pause(flow.client_conn.id)

        return charge

    async def request(self, flow: http.HTTPFlow) -> None:
        verdict = flow_verdict(flow)
        lease = verdict.budgeted.lease if verdict and verdict.budgeted else None
        if callable(flow.request.stream) and lease is not None and not await lease.settle():
            return      # cut when the answer came (the end of the body never goes out)
        self._check_held(flow)

    def _check_held(self, flow: http.HTTPFlow) -> None:
        body = flow.metadata.pop(CHECKED_KEY, None)
        allowed = self._allowed(flow)
        if not isinstance(body, Outgoing) or allowed is None or flow.response is not None:
            return
        conn, _verdict = allowed
        request = flow.request
        try:
            out = whole(body, request.raw_content or b"")
        except Refusal as refusal:
            self._answer(flow, conn, refusal)
            return
        if body.substitute:
            request.headers.pop("content-encoding", None)
            request.raw_content = out
        # the length as received (an HTTP/2 client may send none): an HTTP/1 upstream must
        # never be left to guess where this body ends
        request.headers["content-length"] = str(len(request.raw_content or b""))

    def _frame(self, conn: Conn, request: http.Request) -> None:
        if "content-length" in request.headers or "transfer-encoding" in request.headers:
            return
        if conn.upstream_alpn == b"h2":
            return
        request.headers["transfer-encoding"] = "chunked"
        if conn.upstream_alpn is None and request.scheme == "https":
            conn.framing_pending.append(request)    # undone if the upstream speaks HTTP/2

    def tls_established_server(self, data: tls.TlsData) -> None:
        conn = self.state.conns.get(data.context.client.id)
        if conn is None:
            return
        conn.upstream_alpn = data.conn.alpn or b""
        pending, conn.framing_pending = conn.framing_pending, []
        if conn.upstream_alpn == b"h2":
            for request in pending:
                request.headers.pop("transfer-encoding", None)

    # responses
    def responseheaders(self, flow: http.HTTPFlow) -> None:
        allowed = self._allowed(flow)
        response = flow.response
        if allowed is None or response is None or _no_body(flow.request, response):
            return
        conn, _verdict = allowed
        scrub = flow_secrets(flow).scrub
        body = Incoming(conn.sandbox.policy.limits.response_body_bytes,
                        response.headers.get("content-encoding", ""), scrub,
                        self.counts(flow))
        if _held(response):
            flow.metadata[CHECKED_KEY] = body
            return
        if scrub:                   # the decoded, scrubbed body goes out
            for name in ("content-encoding", "content-length"):
                response.headers.pop(name, None)
            if not flow.request.is_http2 and not flow.request.is_http3:
                response.headers["transfer-encoding"] = "chunked"
        response.stream = self._streamer(flow, conn, body)

    def response(self, flow: http.HTTPFlow) -> None:
        body = flow.metadata.pop(CHECKED_KEY, None)
        allowed = self._allowed(flow)
        response = flow.response
        if not isinstance(body, Incoming) or allowed is None or response is None:
            return
        try:
            out = whole(body, response.raw_content or b"")
        except Refusal as refusal:
            self._unscannable(flow, refusal)
            return
        if body.scrub:
            response.headers.pop("content-encoding", None)
            response.content = out

    # refusals
    def _answer(self, flow: http.HTTPFlow, conn: Conn, refusal: Refusal) -> None:
        if refusal.leaks:
            self.on_trip(flow, conn, list(refusal.leaks), "the request body")
            return
        refuse(flow, FlowVerdict(conn.sandbox.policy.refuse(refusal.reason), conn.target,
                                 conn.dialed_port, error=refusal.error), self.state)

    def _unscannable(self, flow: http.HTTPFlow, refusal: Refusal) -> None:
        verdict = flow.metadata[METADATA_KEY]
        flow.metadata[METADATA_KEY] = verdict.redecided(verdict.decision.failed(refusal.reason),
                                                        refusal.error)
        flow.response = http.Response.make(
            502, json.dumps({"error": str(refusal.reason), "host": verdict.host,
                             "hint": refusal.error}) + "\n",
            {"content-type": "application/json", "x-sandgate-reason": str(refusal.reason)})

    def _streamer(self, flow: http.HTTPFlow, conn: Conn, body: Body,
                  charge: Callable[[int], None] = lambda _size: None
                  ) -> Callable[[bytes], list[bytes]]:
        """mitmproxy's stream callable: each chunk through the checker; the last call (an
        empty chunk) finishes it. A broken rule marks the flow and cuts its connections."""
        broken = False

        def stream(chunk: bytes) -> list[bytes]:
            nonlocal broken
            if broken:
                return []
            try:
                charge(len(chunk))
                out = body.feed(chunk) if chunk else body.finish()
            except Refusal as refusal:
                broken = True
                self._mark(flow, conn, refusal)
                self.state.cut(flow)
                return []
            return pieces(out)

        return stream

    def _mark(self, flow: http.HTTPFlow, conn: Conn, refusal: Refusal) -> None:
        if refusal.leaks:
            self.on_trip(flow, conn, list(refusal.leaks), "the request body", answer=False)
            return
        verdict = flow.metadata[METADATA_KEY]
        decision = conn.sandbox.policy.refuse(refusal.reason) \
            if refusal.reason != Reason.RESPONSE_UNSCANNABLE else \
            verdict.decision.failed(refusal.reason)
        if refusal.reason == Reason.BUDGET_EXCEEDED:    # the summary counts it by rule
            decision = conn.sandbox.policy.refuse(refusal.reason, verdict.decision.rule)
        flow.metadata[METADATA_KEY] = verdict.redecided(decision, refusal.error)


def _over_budget(lease: StreamLease) -> Refusal:
    return Refusal(Reason.BUDGET_EXCEEDED,
                   f"stream over its budget: {lease.used} bytes sent, {lease.granted} granted")
