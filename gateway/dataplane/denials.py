"""How the gateway says no to an HTTP request: a 403 (or 413, 429, 502) whose JSON body names
the policy, the rule (or its absence), the reason and what to do about it."""

from __future__ import annotations

import asyncio
import json

from mitmproxy import http

from gateway.dataplane.bodies import content_length
from gateway.dataplane.state import METADATA_KEY, PAUSED_KEY, FlowVerdict, GatewayState
from policies.decision import Reason

STATUS = {Reason.UPSTREAM_UNRESOLVABLE: 502, Reason.RATE_LIMITED: 429,
          Reason.BUDGET_EXCEEDED: 429,
          Reason.BODY_TOO_LARGE: 413, Reason.AMBIGUOUS_PATH: 400, Reason.PROTOCOL_ERROR: 400,
          Reason.CREDENTIAL_UNAVAILABLE: 502, Reason.CLIENT_CERT_CONFLICT: 421}
# Reasons whose error text the sandbox may read (it names the secret and what its provider
# said, never a value): the hint alone would not say what to fix.
DETAILED = {Reason.CREDENTIAL_UNAVAILABLE, Reason.BUDGET_EXCEEDED}
HINTS = {
    Reason.NO_MATCHING_RULE: "no rule of policy {policy} allows {host}:{port}; ask the "
                             "policy owners to add one (sandgate policy test shows the effect)",
    Reason.DENIED_BY_RULE: "rule {rule} of policy {policy} denies {host}:{port}",
    Reason.NOT_FROM_GATEWAY_DNS: "connect by host name: addresses that did not come from the "
                                 "sandbox's DNS are not allowed",
    Reason.HOST_MISMATCH: "the Host header must name the host you connected to",
    Reason.REFUSED_ADDRESS: "{host} resolves to an address the gateway refuses to dial "
                            "(private, loopback, link-local or metadata)",
    Reason.UPSTREAM_UNRESOLVABLE: "{host} could not be resolved upstream",
    Reason.RATE_LIMITED: "rule {rule} of policy {policy} limits this rate; retry later",
    Reason.APPROVAL_REQUIRED: "policy {policy} asks a person about requests to {host}:{port}; "
                              "nobody could be asked for this one",
    Reason.APPROVAL_DENIED: "a person denied this request to {host}:{port} (policy {policy}); "
                            "ask the policy owners",
    Reason.APPROVAL_TIMEOUT: "nobody approved this request to {host}:{port} in time; retry "
                             "once someone watches `sandgate approvals list`",
    Reason.BUDGET_EXCEEDED: "a budget of policy {policy} is spent for this period (detail "
                            "says which); retry after it resets",
    Reason.SECRET_EXFIL_ATTEMPT: "a secret placeholder may only go to the hosts its rule "
                                 "names; this sandbox is now quarantined",
    Reason.QUARANTINED: "this sandbox is quarantined after a secret-exfiltration attempt",
    Reason.SIGV4_UNVERIFIED: "sign AWS requests with the sandbox's AWS_* placeholders",
    Reason.BODY_TOO_LARGE: "the request body is larger than policy {policy} allows",
    Reason.AMBIGUOUS_PATH: "this path reads differently to different servers (an encoded "
                           "'/', '\\' or NUL, a backslash, double encoding, or encoding "
                           "that is not UTF-8); send it plainly",
    Reason.PROTOCOL_ERROR: "the request could mean more than one thing (a repeated Host, "
                           "Authorization or Content-Length, or a request target that is "
                           "not a path); send it plainly",
    Reason.CREDENTIAL_UNAVAILABLE: "the gateway could not get rule {rule}'s credential from "
                                   "its provider; the secret's owner sees why in `sandgate "
                                   "secret list`",
    Reason.CLIENT_CERT_CONFLICT: "this connection presents another client certificate than "
                                 "rule {rule} does; send this request on a new connection",
}


def denial_response(verdict: FlowVerdict) -> http.Response:
    d = verdict.decision
    hint = HINTS.get(d.reason, "this request is not allowed by the sandbox's egress policy")
    body = {
        "error": "egress_denied",
        "host": verdict.host,
        "port": verdict.port,
        "policy": d.policy,
        "rule": d.rule,
        "reason": str(d.reason),
        "hint": hint.format(policy=d.policy, rule=d.rule, host=verdict.host, port=verdict.port),
    }
    if d.reason in DETAILED and verdict.error:
        body["detail"] = verdict.error
    status = STATUS.get(d.reason, 403)
    return http.Response.make(status, json.dumps(body) + "\n",
                              {"content-type": "application/json",
                               "x-sandgate-reason": str(d.reason)})


LARGE_BODY = 64 * 1024
H2_BODY_GRACE = 1.0     # seconds a refused HTTP/2 request of no announced length has to end


def refuse(flow: http.HTTPFlow, verdict: FlowVerdict, state: GatewayState) -> None:
    """Answer with the denial. A refused request whose body is still to come and announces a
    large (or chunked) one is cut off instead: mitmproxy would read the whole body into the
    worker's memory before answering (it has no limit of its own here), and a refused body
    is not worth holding. Every refusal made before the body is read goes through here."""
    flow.metadata[METADATA_KEY] = verdict
    request = flow.request
    unread = request.timestamp_end is None      # mitmproxy sets it once the body is in
    length = content_length(request.headers)
    if unread and ((length or 0) > LARGE_BODY or
                   "chunked" in request.headers.get("transfer-encoding", "").lower()):
        flow.kill()
        return
    if unread and length is None and (request.is_http2 or request.is_http3):
        _await_end(flow, state)
    flow.response = denial_response(verdict)


def _await_end(flow: http.HTTPFlow, state: GatewayState) -> None:
    """An HTTP/2 request of no announced length may or may not have a body (whether its
    HEADERS ended the stream is not told to addons), and mitmproxy would read all of it
    before answering. Nothing more is read from the connection meanwhile: a request that has
    ended is answered at once (the end came in the same read) and reading resumes with the
    answer (addons.one_at_a_time); one whose body is still coming is cut after
    H2_BODY_GRACE seconds, its connection with it."""
    if not state.hold.pause(flow.client_conn.id):
        return
    flow.metadata[PAUSED_KEY] = True

    def still_coming() -> None:
        if flow.metadata.get(PAUSED_KEY):
            state.cut(flow)

    asyncio.get_running_loop().call_later(H2_BODY_GRACE, still_coming)


