"""The two-stage egress check shared by the HTTP and TCP addons: policy on the name (or an
address rule for an IP literal), then resolve once and vet the address. The vetted address
becomes a permit on the connection; server_connect dials permits and nothing else. A permit
serves later requests on the connection only as far as their own rule opens its address."""

from __future__ import annotations

import ipaddress
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace

from gateway.approvals.ask import Ask
from gateway.dataplane.leases import CHUNK, StreamLease
from gateway.dataplane.state import Budgeted, Conn, FlowVerdict, GatewayState
from gateway.dataplane.upstream import ResolveError, Vetted
from gateway.processes.budgets import caps
from policies.decision import Decision, Reason, Verdict
from policies.matcher import Request
from policies.paths import AmbiguousPath, canonical_path
from vault.placeholders import PATTERN
from vault.redact import REDACTED, redact_query


def request_for(conn: Conn, protocol: str, *, method: str | None = None,
                path: str | None = None, query: Mapping[str, Sequence[str]] | None = None,
                headers: Mapping[str, Sequence[str]] | None = None) -> Request:
    address = None if conn.name else ipaddress.IPv4Address(conn.dialed_ip)
    return Request(port=conn.dialed_port, protocol=protocol, host=conn.name, address=address,
                   method=method, path=path, query=query or {}, headers=headers or {})


async def authorize(state: GatewayState, conn: Conn, request: Request,
                    expected: int = 0, *, body: int | None = 0,
                    head: Callable[[], int] = lambda: 0, stream: bool = False) -> FlowVerdict:
    """Counted against byte budgets: `expected`, the request body's announced length, and
    `head()`, its request line and headers (measured only when a budget applies); `stream`:
    a body of unknown length or a stream follows (it leases its bytes,
    gateway.dataplane.leases). `body`: the announced length again, None when a body of
    unannounced length may follow (shown to whoever decides on an `ask`)."""
    policy = conn.sandbox.policy
    port = conn.dialed_port
    if conn.refused is not None:
        return FlowVerdict(conn.refused, conn.target, port)
    if conn.sandbox.quarantined:
        return FlowVerdict(policy.refuse(Reason.QUARANTINED), conn.target, port,
                           error="quarantined after a secret-exfiltration attempt")
    decision = policy.decide(request)
    note = None
    if decision.verdict == Verdict.DENY and decision.reason == Reason.APPROVAL_REQUIRED:
        decision, note = await _approved(state, conn, request, decision, body)
    if not decision.allowed:
        return FlowVerdict(decision, conn.target, port, error=note)
    grant = decision.grant
    rule = decision.rule or ""
    if grant is not None and grant.limits is not None and \
            not await state.coord.admit(conn.sandbox.id, rule, grant.limits):
        return FlowVerdict(policy.refuse(Reason.RATE_LIMITED, decision.rule), conn.target, port)
    vetted = conn.permits.get((conn.target, port))
    if vetted is not None and (why := state.resolver.refusal(vetted.address, grant)):
        # vetted for another rule on this connection, one that opens a private range
        return FlowVerdict(policy.refuse(Reason.REFUSED_ADDRESS, decision.rule), conn.target,
                           port, error=f"{vetted.address} ({why}) is not opened by rule {rule}")
    if vetted is None:
        try:
            vetted = await _vet(state, conn, grant.networks if grant else ())
        except ResolveError as e:
            return FlowVerdict(policy.refuse(e.reason, decision.rule), conn.target, port,
                               error=str(e))
        conn.permits[(conn.target, port)] = vetted
    applying = caps(decision.rule, grant.budget if grant else None, policy.budget)
    budgeted = None
    if applying:    # last: only a request that would go out counts against a budget
        bytes_budget = any(cap.bytes_up is not None for cap in applying)
        allowance = await state.coord.budget(conn.sandbox.id, policy.name, list(applying),
                                             expected + head(),
                                             CHUNK if stream and bytes_budget else 0)
        if allowance.refused is not None:
            return FlowVerdict(policy.refuse(Reason.BUDGET_EXCEEDED, decision.rule),
                               conn.target, port, error=allowance.refused)
        lease = StreamLease(state.coord, conn.sandbox.id, policy.name, applying,
                            granted=expected + allowance.leased, at=allowance.at,
                            spent=allowance.spent, reserved=expected) if bytes_budget else None
        budgeted = Budgeted(policy.name, applying, lease)
    return FlowVerdict(decision, conn.target, port, upstream=str(vetted.address), error=note,
                       budgeted=budgeted)


async def _approved(state: GatewayState, conn: Conn, request: Request, decision: Decision,
                    body: int | None) -> tuple[Decision, str | None]:
    """An `ask` decision, held until a person decides (only this flow waits): allowed under
    the ask rule's grant, or refused with why. Only HTTP requests are asked about."""
    if not request.is_http or conn.name is None or request.method is None:
        return decision, "approvals are asked for HTTP requests to names only"
    try:   # the path as the policy reads it: what a `--for policy` rule must name
        path = decision.path or canonical_path(request.path or "/")
    except AmbiguousPath:
        return decision, "a path with no one meaning is not asked about"
    ask = Ask(conn.sandbox.id, conn.sandbox.owner, decision.policy or "",
              decision.policy_version or "", decision.rule, request.protocol, conn.name,
              request.port, request.method.upper(), path, shown_query(request), body)
    with state.hold(conn.client_id):   # nothing more is read from the sandbox meanwhile
        outcome = await state.coord.approve(ask)
    if outcome.allowed:   # what goes out is the path the person approved, never a spelling
        return replace(decision, verdict=Verdict.ALLOW, reason=Reason.APPROVED,
                       path=path), outcome.note()
    reason = Reason(outcome.reason)
    return Decision(Verdict.DENY, reason, decision.rule, decision.policy,
                    decision.policy_version), outcome.note()


def shown_query(request: Request) -> str:
    """The query as whoever decides sees it: credential-like values and placeholders
    redacted, as the audit log keeps it."""
    pairs = [(name, value) for name, values in request.query.items() for value in values]
    return PATTERN.sub(REDACTED, redact_query(urllib.parse.urlencode(pairs)))[:2048]


async def _vet(state: GatewayState, conn: Conn,
               permitted: Sequence[ipaddress.IPv4Network]) -> Vetted:
    if conn.name is None:
        return state.resolver.vet_literal(ipaddress.IPv4Address(conn.dialed_ip), permitted)
    return await state.resolver.resolve(conn.name, permitted)
