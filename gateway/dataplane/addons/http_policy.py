"""HTTP requests, on every version alike: one meaning per request before the policy sees it.
The request target must be origin-form (an absolute-form naming the dialed host is turned
into one; naming another is host fronting); Host, :authority and an absolute target must name
the dialed host; a repeated Host, Authorization or Content-Length is refused. Then the policy
decides, and where rules have paths the request goes upstream with the canonical path the
policy matched. A denial is answered here with a 403 (400 for an ambiguous path) whose JSON
body names the policy, the rule (or its absence) and what to do about it."""

from __future__ import annotations

import dataclasses
import urllib.parse
from functools import partial

from mitmproxy import http

from gateway.dataplane.authorize import authorize, request_for
from gateway.dataplane.bodies import content_length, head_size
from gateway.dataplane.denials import refuse
from gateway.dataplane.injection import NO_BODY, query_fields
from gateway.dataplane.records import sent
from gateway.dataplane.state import METADATA_KEY, SENT_KEY, Conn, FlowVerdict, GatewayState
from policies.decision import Reason
from policies.hosts import HostError, normalise_name
from policies.matcher import Request

# Headers a request may carry once: upstreams disagree on which copy counts.
SINGLE = ("host", "authorization", "proxy-authorization", "content-length")
DEFAULT_PORTS = {"http": 80, "https": 443}


class Refusal(Exception):
    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def _authority(text: str, default_port: int) -> tuple[str | None, int | None]:
    """(normalised host, port) of an authority (`host`, `host:port`, `[v6]:port`); None for
    what does not parse."""
    try:
        parts = urllib.parse.urlsplit("//" + text)
        port = parts.port or default_port
        return normalise_name(parts.hostname or ""), port
    except (ValueError, HostError):
        return None, None


def _check_target(conn: Conn, flow: http.HTTPFlow) -> None:
    """Turn the request target into origin-form, or raise Refusal. mitmproxy keeps HTTP/2's
    and HTTP/3's :path verbatim and HTTP/1's absolute-form in `authority`; an upstream
    speaking HTTP/1 would get either as an absolute-form request line."""
    request = flow.request
    scheme = "https" if flow.client_conn.tls else "http"
    target = request.path
    if request.authority and not request.is_http2 and not request.is_http3:
        target = f"{request.scheme}://{request.authority}{request.path}"   # HTTP/1 absolute
    if target.startswith("/") or (target == "*" and request.method == "OPTIONS"):
        return
    parts = urllib.parse.urlsplit(target)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise Refusal(Reason.PROTOCOL_ERROR, f"request target {target[:200]!r} is neither "
                                             "origin-form nor absolute-form")
    named = _authority(parts.netloc, DEFAULT_PORTS[parts.scheme])
    if named != (conn.name or conn.dialed_ip, conn.dialed_port) or parts.scheme != scheme:
        raise Refusal(Reason.HOST_MISMATCH, f"request target {target[:200]!r} on a "
                                            f"connection to {conn.target}")
    if not request.is_http2 and not request.is_http3:
        request.authority = ""      # HTTP/1's absolute-form; :authority stays as it is
    request.path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")


def _check_headers(conn: Conn, flow: http.HTTPFlow) -> None:
    """Raise Refusal for a repeated single header, or a Host or :authority naming another
    host than the dialed one (host fronting: credentials and policy follow the dialed name,
    so a request naming another host is refused rather than silently re-targeted)."""
    headers = flow.request.headers
    for name in SINGLE:
        if len(headers.get_all(name)) > 1:
            raise Refusal(Reason.PROTOCOL_ERROR, f"{len(headers.get_all(name))} {name} headers")
    dialed = conn.name or conn.dialed_ip
    # HTTP/1: the Host header; HTTP/2 and 3: :authority, and a Host header if one came too
    named = [flow.request.authority] if flow.request.is_http2 or flow.request.is_http3 else []
    named += headers.get_all("host")
    for authority in filter(None, named):
        # the port too: the policy judged the dialed port, and an upstream routing by the
        # Host's port would read another request
        if _authority(authority, conn.dialed_port) != (dialed, conn.dialed_port):
            raise Refusal(Reason.HOST_MISMATCH,
                          f"Host {authority[:200]!r} on a connection to {conn.target}")
    if not any(named):
        raise Refusal(Reason.HOST_MISMATCH, f"no Host on a connection to {conn.target}")


def _request(conn: Conn, flow: http.HTTPFlow) -> Request:
    request = flow.request
    query: dict[str, list[str]] = {}
    for key, value in query_fields(request):
        query.setdefault(key, []).append(value)
    headers: dict[str, list[str]] = {}
    for name, value in request.headers.items(multi=True):
        headers.setdefault(name.lower(), []).append(value)
    return request_for(conn, "https" if flow.client_conn.tls else "http",
                       method=request.method, path=request.path, query=query, headers=headers)


def _announced(request: http.Request, length: int | None) -> int | None:
    """The body's announced length; 0 for none (HTTP/1 without a length or chunking); None
    when one of any length may follow (chunked, or an HTTP/2 or 3 request without a length,
    whose headers may not have ended the stream)."""
    if length is not None:
        return length
    if request.is_http2 or request.is_http3 or "transfer-encoding" in request.headers:
        return None
    return 0


class HttpPolicy:
    def __init__(self, state: GatewayState) -> None:
        self.state = state

    async def requestheaders(self, flow: http.HTTPFlow) -> None:
        conn = self.state.conns.get(flow.client_conn.id)
        if conn is None:
            flow.kill()
            return
        flow.metadata[SENT_KEY] = sent(flow.request)   # for the audit row, before any change
        verdict = await self._verdict(conn, flow)
        flow.metadata[METADATA_KEY] = verdict
        if flow.error is not None:
            return          # mitmproxy answers it already
        if not verdict.decision.allowed:
            refuse(flow, verdict, self.state)
            return
        if verdict.decision.path is not None:
            self._send_canonical(flow, verdict)
        if verdict.upstream:
            # Dial the vetted address for this and later requests on the connection, so the
            # upstream connection is reused; the Host header stays as the client sent it.
            flow.request.data.host = verdict.upstream

    async def _verdict(self, conn: Conn, flow: http.HTTPFlow) -> FlowVerdict:
        policy = conn.sandbox.policy
        if flow.error is not None:
            # mitmproxy refused it already (CONNECT in transparent mode, ambiguous framing
            # that could smuggle a second request): record it as such.
            return FlowVerdict(policy.refuse(Reason.PROTOCOL_ERROR), conn.target,
                               conn.dialed_port, error=flow.error.msg)
        length = content_length(flow.request.headers)
        if length is not None and length > policy.limits.request_body_bytes:
            return FlowVerdict(policy.refuse(Reason.BODY_TOO_LARGE), conn.target,
                               conn.dialed_port, error=f"request body of {length} bytes")
        try:
            _check_headers(conn, flow)
            _check_target(conn, flow)
        except Refusal as e:
            return FlowVerdict(policy.refuse(e.reason), conn.target, conn.dialed_port,
                               error=str(e))
        verdict = await authorize(self.state, conn, _request(conn, flow), length or 0,
                                  body=_announced(flow.request, length),
                                  head=partial(head_size, flow.request),
                                  stream=length is None and _may_stream(flow.request))
        if verdict.decision.reason == Reason.AMBIGUOUS_PATH:
            return FlowVerdict(verdict.decision, verdict.host, verdict.port,
                               error=f"path {flow.request.path[:200]!r} has no one meaning")
        return verdict

    @staticmethod
    def _send_canonical(flow: http.HTTPFlow, verdict: FlowVerdict) -> None:
        """Send upstream the path the policy matched; the audit row keeps it, and how the
        sandbox spelled it when that differs."""
        path, sep, query = flow.request.path.partition("?")
        canonical = verdict.decision.path or path
        if canonical == path:
            return
        flow.request.path = canonical + sep + query
        as_sent = flow.metadata[SENT_KEY]
        flow.metadata[SENT_KEY] = dataclasses.replace(as_sent, path=canonical)
        verdict.error = verdict.error or f"path canonicalised from {as_sent.path!r}"


def _may_stream(request: http.Request) -> bool:
    """A body of unknown length may follow (chunked; HTTP/2 without a length, for a method
    that carries one): it leases its bytes from admission on. (A WebSocket's messages lease
    theirs when they come, after the upgrade's answer.)"""
    h2 = request.is_http2 or request.is_http3
    return "transfer-encoding" in request.headers or (h2 and request.method not in NO_BODY)
