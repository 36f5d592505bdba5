"""MCP servers over streamable HTTP, for requests a rule with `mcp:` allowed.

Request: the POST's JSON-RPC (one message or a batch) is held whole (Content-Length at most
gateway.dataplane.mcp.HOLD_LIMIT, not compressed) and read with the SDK's types; each
message is judged on its own (policies.mcp). A refused request is answered by the gateway
with a JSON-RPC error the client's SDK raises (HTTP 200; `data` names the policy, rule and
reason); the rest of a batch goes on, its answer merged with those errors. A body the gateway
cannot read is refused (HTTP 400 with a JSON-RPC parse or invalid-request error), never
passed. GET (the server's event stream) and DELETE (the session's end) carry no JSON-RPC.

Response: answers to `tools/list`, and everything on a GET stream (where a resumed answer may
arrive), are read (JSON, or SSE rewritten event by event: gateway.dataplane.sse) and every
tools/list result keeps only the tools a call would be allowed for. Requests go out without
Accept-Encoding, so answers come readable; one that is not is cut.

Runs after Bodies: the tripwire sees the body as the sandbox sent it, and Bodies holds an MCP
body up to HOLD_LIMIT (not its usual window), so this addon reads it in `request`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from mcp_types import INTERNAL_ERROR
from mitmproxy import http

from gateway.dataplane.bodies import content_length, pieces
from gateway.dataplane.mcp import (
    CODES,
    Item,
    Unreadable,
    dumps,
    error,
    filter_body,
    filter_message,
    header_mismatch,
    judge,
    loads,
    read_post,
)
from gateway.dataplane.mcp_exchange import HOLD_LIMIT, MCP_KEY, McpExchange
from gateway.dataplane.sse import EventRewriter, TooLong, event
from gateway.dataplane.state import (
    METADATA_KEY,
    Conn,
    FlowVerdict,
    GatewayState,
    flow_secrets,
    flow_verdict,
)
from policies.decision import Decision, Reason
from policies.mcp import McpMiss
from policies.schema import McpSpec
from vault import scrub

SMALL = 64 * 1024            # a refused body up to this is read and answered; larger: cut
HINT = ("ask the policy owners to allow it; sandgate policy test POLICY POST URL --mcp-tool "
        "NAME shows what a rule allows")


def _reason(item: Item) -> Reason:
    assert item.refusal is not None
    return Reason.MCP_METHOD_DENIED if item.refusal.miss in (McpMiss.METHOD, McpMiss.RESPONSE) \
        else Reason.MCP_TOOL_DENIED


def _media(message: http.Message) -> str:
    value: str = message.headers.get("content-type", "")
    return value.split(";")[0].strip().lower()


def _encoded(message: http.Message) -> bool:
    value: str = message.headers.get("content-encoding", "identity")
    return value.strip().lower() != "identity"


class McpGuard:
    def __init__(self, state: GatewayState) -> None:
        self.state = state

    def _allowed(self, flow: http.HTTPFlow) -> tuple[Conn, FlowVerdict, McpSpec] | None:
        conn = self.state.conns.get(flow.client_conn.id)
        verdict = flow_verdict(flow)
        if conn is None or verdict is None or flow.response is not None:
            return None
        grant = verdict.decision.grant
        if not verdict.decision.allowed or grant is None or grant.mcp is None:
            return None
        return conn, verdict, grant.mcp

    # requests
    def requestheaders(self, flow: http.HTTPFlow) -> None:
        found = self._allowed(flow)
        if found is None:
            return
        conn, _verdict, spec = found
        request = flow.request
        request.headers.pop("accept-encoding", None)   # answers must come readable
        exchange = flow.metadata[MCP_KEY] = McpExchange(spec)
        if request.method in ("GET", "DELETE"):
            exchange.read_response = request.method == "GET"
            return
        problem = _unholdable(request)
        if problem is not None:
            self._unreadable(flow, conn, exchange, Unreadable(problem), body_read=False)

    def request(self, flow: http.HTTPFlow) -> None:
        exchange = flow.metadata.get(MCP_KEY)
        found = self._allowed(flow)
        if not isinstance(exchange, McpExchange) or found is None or \
                flow.request.method != "POST":
            return
        conn, verdict, spec = found
        try:
            batch, messages = read_post(flow.request.raw_content or b"")
            items = [judge(message, spec) for message in messages]
            mismatch = header_mismatch(items, batch, flow.request.headers, spec)
            if mismatch:
                raise Unreadable(mismatch)
        except Unreadable as e:
            self._unreadable(flow, conn, exchange, e)
            return
        policy, rule = conn.sandbox.policy, verdict.decision.rule
        exchange.items = items
        exchange.decisions = [verdict.decision if i.refusal is None else
                              policy.refuse(_reason(i), rule) for i in items]
        exchange.calls = [(_shown(flow, i.method), _shown(flow, i.tool) if i.tool else None, d)
                          for i, d in zip(items, exchange.decisions, strict=True)]
        passing = [i for i, d in zip(items, exchange.decisions, strict=True) if d.allowed]
        exchange.errors = [self._error(flow, i, d) for i, d in
                           zip(items, exchange.decisions, strict=True)
                           if not d.allowed and i.is_request]
        exchange.read_response = any(i.method == "tools/list" for i in passing)
        if not passing:
            self._answer(flow, conn, exchange, batch)
        elif len(passing) < len(items):
            # the rest of a batch goes on; one message alone goes unwrapped, which servers
            # that take no batches (the SDK's, since protocol 2025-06-18) accept
            body = dumps(passing[0].raw if len(passing) == 1 else [i.raw for i in passing])
            flow.request.raw_content = body
            flow.request.headers["content-length"] = str(len(body))

    def _error(self, flow: http.HTTPFlow, item: Item, decision: Decision) -> dict[str, Any]:
        assert item.refusal is not None
        text = _shown(flow, item.refusal.text)
        return error(item.id, CODES[item.refusal.miss],
                     f"sandgate: {text} (policy {decision.policy}, rule {decision.rule})",
                     {"error": "egress_denied", "reason": str(decision.reason),
                      "policy": decision.policy, "rule": decision.rule, "hint": HINT})

    def _answer(self, flow: http.HTTPFlow, conn: Conn, exchange: McpExchange,
                batch: bool) -> None:
        """Nothing of the POST may go out: the gateway answers every request in it."""
        first = next(d for d in exchange.decisions if not d.allowed)
        refused = next(i for i in exchange.items if i.refusal is not None)
        assert refused.refusal is not None
        flow.metadata[METADATA_KEY] = FlowVerdict(first, conn.target, conn.dialed_port,
                                                  error=_shown(flow, refused.refusal.text))
        exchange.answered = True
        if exchange.errors:
            body = exchange.errors if batch else exchange.errors[0]
            flow.response = _json(200, body)
        else:    # notifications or responses only: nothing to reply to, still refused
            flow.response = _json(403, error(None, CODES[refused.refusal.miss],
                                             f"sandgate: {refused.refusal.text}"))

    def _unreadable(self, flow: http.HTTPFlow, conn: Conn, exchange: McpExchange,
                    problem: Unreadable, body_read: bool = True) -> None:
        policy = conn.sandbox.policy
        verdict = flow.metadata[METADATA_KEY]
        decision = policy.refuse(Reason.MCP_UNPARSEABLE, verdict.decision.rule)
        if decision.allowed:      # monitor mode: would have been refused
            flow.metadata[METADATA_KEY] = verdict.redecided(decision, str(problem))
            flow.metadata.pop(MCP_KEY, None)
            return
        flow.metadata[METADATA_KEY] = FlowVerdict(decision, conn.target, conn.dialed_port,
                                                  error=str(problem))
        exchange.answered = True
        request = flow.request
        request.stream = False
        length = content_length(request.headers)
        unbounded = length is None and (request.is_http2
                                        or bool(request.headers.get("content-length"))
                                        or "transfer-encoding" in request.headers)
        if not body_read and (unbounded or (length or 0) > SMALL):
            flow.kill()     # a body not worth reading to refuse it (nor unbounded)
            return
        flow.response = _json(400, error(None, problem.code, f"sandgate: {problem}",
                                         {"error": "egress_denied",
                                          "reason": str(decision.reason)}))

    # responses
    def responseheaders(self, flow: http.HTTPFlow) -> None:
        exchange = flow.metadata.get(MCP_KEY)
        response = flow.response
        if not isinstance(exchange, McpExchange) or exchange.answered or response is None:
            return
        if not (exchange.read_response or exchange.errors):
            return
        if response.status_code == 202 and exchange.errors:
            # the rest of the batch were notifications: the answer is the gateway's errors
            response.status_code = 200
            response.headers["content-type"] = "application/json"
            response.headers.pop("content-length", None)
            pending = [dumps(exchange.errors)]
            response.stream = lambda chunk: [] if chunk or not pending else [pending.pop()]
            return
        if _encoded(response):
            self._broken(flow, "a compressed answer cannot be read")
            response.stream = lambda _chunk: []
            return
        if response.stream:
            self._stream(flow, exchange, response)

    def _stream(self, flow: http.HTTPFlow, exchange: McpExchange,
                response: http.Response) -> None:
        """Bodies streams this answer (large, or without a length): read it as it passes."""
        inner = response.stream if callable(response.stream) else None
        reader = self._reader(exchange, _media(response))
        if reader is None:
            return
        feed, finish = reader
        response.headers.pop("content-length", None)
        if not flow.request.is_http2 and not flow.request.is_http3:
            response.headers["transfer-encoding"] = "chunked"
        broken = False

        def stream(chunk: bytes) -> list[bytes]:
            nonlocal broken
            out = inner(chunk) if inner else chunk
            data = out if isinstance(out, bytes) else b"".join(out)
            if broken:
                return []
            try:
                return pieces(feed(data) + (b"" if chunk else finish()))
            except (Unreadable, TooLong) as e:
                broken = True
                self._broken(flow, str(e))
                self.state.cut(flow)
                return []

        response.stream = stream

    def _reader(self, exchange: McpExchange, media: str) -> tuple[
            Callable[[bytes], bytes], Callable[[], bytes]] | None:
        if media == "text/event-stream":
            rewriter = EventRewriter(lambda data: self._event(exchange, data), HOLD_LIMIT)

            def finish() -> bytes:
                return rewriter.finish() + b"".join(event(dumps(e).decode())
                                                    for e in exchange.errors)

            return rewriter.feed, finish
        if media == "application/json":
            held = bytearray()

            def feed(data: bytes) -> bytes:
                held.extend(data)
                if len(held) > HOLD_LIMIT:
                    raise Unreadable(f"a JSON-RPC answer over {HOLD_LIMIT} bytes is not read")
                return b""

            return feed, lambda: filter_body(bytes(held), exchange.spec, exchange.errors)
        return None

    def _event(self, exchange: McpExchange, data: str) -> str:
        if not data:
            return data
        message = loads(data)
        if isinstance(message, list):
            out = [filter_message(m, exchange.spec) for m in message]
            new: Any = [m for m, _ in out]
            removed = sum(r for _, r in out)
        else:
            new, removed = filter_message(message, exchange.spec)
        exchange.hidden += removed
        return dumps(new).decode() if removed else data

    def response(self, flow: http.HTTPFlow) -> None:
        """An answer Bodies held whole (small, with a length)."""
        exchange = flow.metadata.get(MCP_KEY)
        response = flow.response
        if not isinstance(exchange, McpExchange) or exchange.answered or response is None or \
                response.stream or not (exchange.read_response or exchange.errors):
            return
        reader = self._reader(exchange, _media(response))
        if reader is None:
            return
        feed, finish = reader
        try:
            body = feed(response.raw_content or b"") + finish()
        except (Unreadable, TooLong) as e:
            self._broken(flow, str(e))
            flow.response = _json(502, error(None, INTERNAL_ERROR, "sandgate: the MCP "
                                             f"server's answer cannot be read: {e}"))
            return
        response.raw_content = body
        response.headers["content-length"] = str(len(body))

    def _broken(self, flow: http.HTTPFlow, text: str) -> None:
        verdict = flow.metadata[METADATA_KEY]
        flow.metadata[METADATA_KEY] = verdict.redecided(
            verdict.decision.failed(Reason.MCP_UNPARSEABLE), text)


def _unholdable(request: http.Request) -> str | None:
    """Why this request cannot be held and read, or None."""
    if request.method != "POST":
        return f"MCP over streamable HTTP is POST, GET and DELETE, not {request.method}"
    if _encoded(request):
        return "a compressed JSON-RPC body is not read; send it uncompressed"
    length = content_length(request.headers)
    if length is None:
        return "a JSON-RPC body must come with its Content-Length"
    if length > HOLD_LIMIT:
        return f"a JSON-RPC body over {HOLD_LIMIT} bytes is not read"
    return None


def _json(status: int, body: Any) -> http.Response:
    return http.Response.make(status, json.dumps(body) + "\n",
                              {"content-type": "application/json"})


def _shown(flow: http.HTTPFlow, text: str) -> str:
    """`text` with any credential the gateway wrote into the body turned back into its
    placeholder (a `body` injection happens before this addon reads the body)."""
    table = flow_secrets(flow).scrub
    return scrub.scrub(text.encode(), table).decode(errors="replace") if table else text
