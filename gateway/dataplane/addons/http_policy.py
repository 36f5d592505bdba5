"""HTTP requests: the Host (or :authority) must name the host behind the dialed address; then
the policy decides on host and port. A denial is answered here with a 403 whose JSON body
names the policy, the rule (or its absence) and what to do about it."""

from __future__ import annotations

from mitmproxy import http

from gateway.dataplane.authorize import authorize, request_for
from gateway.dataplane.denials import refuse
from gateway.dataplane.records import sent
from gateway.dataplane.state import METADATA_KEY, SENT_KEY, Conn, FlowVerdict, GatewayState
from policies.decision import Reason
from policies.hosts import HostError, normalise_name
from policies.matcher import Request


def _host_of(flow: http.HTTPFlow) -> str | None:
    """The host the request names: Host header (HTTP/1) or :authority (HTTP/2), port removed."""
    authority = flow.request.host_header
    if not authority:
        return None
    host = authority.rsplit(":", 1)[0] if not authority.endswith("]") else authority
    try:
        return normalise_name(host.strip("[]"))
    except HostError:
        return None


def _authority_agrees(flow: http.HTTPFlow, host: str | None) -> bool:
    """An absolute-form request line (GET http://other/ HTTP/1.1) must name the same host as
    the Host header: some upstreams route on one, some on the other."""
    authority = flow.request.authority
    if not authority or flow.request.is_http2:
        return True  # origin form; for HTTP/2, :authority is what host_header already read
    try:
        named = normalise_name(authority.rsplit(":", 1)[0].strip("[]"))
    except HostError:
        return False
    return named == host


def _request(conn: Conn, flow: http.HTTPFlow) -> Request:
    request = flow.request
    query: dict[str, list[str]] = {}
    for key, value in request.query.items(multi=True):
        query.setdefault(key, []).append(value)
    headers = {k.lower(): v for k, v in request.headers.items()}
    return request_for(conn, "https" if flow.client_conn.tls else "http",
                       method=request.method, path=request.path, query=query, headers=headers)


class HttpPolicy:
    def __init__(self, state: GatewayState) -> None:
        self.state = state

    async def requestheaders(self, flow: http.HTTPFlow) -> None:
        conn = self.state.conns.get(flow.client_conn.id)
        if conn is None:
            flow.kill()
            return
        flow.metadata[SENT_KEY] = sent(flow.request)   # for the audit row, before any change
        policy = conn.sandbox.policy
        if flow.error is not None:
            # mitmproxy refused it already (CONNECT in transparent mode, ambiguous framing
            # that could smuggle a second request): record it as such.
            flow.metadata[METADATA_KEY] = FlowVerdict(
                policy.refuse(Reason.PROTOCOL_ERROR), conn.target, conn.dialed_port,
                error=flow.error.msg)
            return
        length = flow.request.headers.get("content-length", "")
        if length.isdigit() and int(length) > policy.limits.request_body_bytes:
            verdict = FlowVerdict(policy.refuse(Reason.BODY_TOO_LARGE), conn.target,
                                  conn.dialed_port, error=f"request body of {length} bytes")
            flow.metadata[METADATA_KEY] = verdict
            refuse(flow, verdict)
            return
        verdict = await authorize(self.state, conn, _request(conn, flow))
        named = _host_of(flow)
        if verdict.decision.allowed and (named != (conn.name or conn.dialed_ip)
                                         or not _authority_agrees(flow, named)):
            # Host fronting: credentials and policy follow the dialed name, so a request
            # naming another host is refused rather than silently re-targeted.
            verdict = FlowVerdict(conn.sandbox.policy.refuse(Reason.HOST_MISMATCH),
                                  conn.target, conn.dialed_port,
                                  error=f"Host {flow.request.host_header!r} on a connection "
                                        f"to {conn.target}")
        flow.metadata[METADATA_KEY] = verdict
        if not verdict.decision.allowed:
            refuse(flow, verdict)
        elif verdict.upstream:
            # Dial the vetted address for this and later requests on the connection, so the
            # upstream connection is reused; the Host header stays as the client sent it.
            flow.request.data.host = verdict.upstream
