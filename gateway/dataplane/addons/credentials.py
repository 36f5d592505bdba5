"""Credentials: placeholders in, real secrets out, only where a rule says so.

On each HTTP request (headers, URL and body up to SCAN_LIMIT): a placeholder that belongs to
another sandbox, or to a secret the allowing rule does not bind to this host, trips the wire:
403 `secret_exfil_attempt`, audited with the secret's name, and (by default) the sandbox is
quarantined. Otherwise the sandbox's placeholders for the rule's secrets are replaced by the
real values (or added, per the rule's `as` form); SigV4 requests are verified against the
placeholder credentials and signed again with the real ones.

On the response of such a request, every real value the rule could have injected is replaced
by the sandbox's placeholder, in headers and in the decoded body; a body that cannot be
decoded (or is larger than SCRUB_LIMIT) is refused with 502 rather than passed unchecked.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable

from mitmproxy import http

from gateway.dataplane.denials import denial_response
from gateway.dataplane.registry import SandboxContext
from gateway.dataplane.state import METADATA_KEY, Conn, FlowVerdict, GatewayState
from policies.decision import Decision, Reason, Verdict
from policies.schema import (
    Inject,
    InjectBasic,
    InjectBearer,
    InjectHeader,
    InjectQuery,
    InjectSigV4,
)
from vault import inject, placeholders, sigv4
from vault.crypto import VaultError
from vault.placeholders import Binding

logger = logging.getLogger(__name__)

SCAN_LIMIT = 8 * 1024 * 1024
SCRUB_LIMIT = 16 * 1024 * 1024


def secret_names(spec: Inject) -> tuple[str, ...]:
    return (spec.secret, spec.access_key_id) if isinstance(spec, InjectSigV4) else (spec.secret,)


def entitled(sandbox: SandboxContext, verdict: FlowVerdict | None) -> list[Inject]:
    """The allowing rule's injections whose secrets this sandbox holds."""
    if verdict is None or verdict.decision.verdict != Verdict.ALLOW:
        return []
    grant = verdict.decision.grant
    if grant is None:
        return []
    return [s for s in grant.inject if all(n in sandbox.secrets for n in secret_names(s))]


def _request_text(request: http.Request) -> Iterable[str | bytes]:
    yield request.path
    for name, value in request.headers.items(multi=True):
        yield f"{name}: {value}"
    body = request.raw_content or b""
    if body and len(body) <= SCAN_LIMIT:
        yield request.get_content(strict=False) or body


class Credentials:
    def __init__(self, state: GatewayState) -> None:
        self.state = state

    # requests
    def request(self, flow: http.HTTPFlow) -> None:
        conn = self.state.conns.get(flow.client_conn.id)
        if conn is None:
            return
        verdict = flow.metadata.get(METADATA_KEY)
        verdict = verdict if isinstance(verdict, FlowVerdict) else None
        sandbox = conn.sandbox
        if sandbox.quarantined and (verdict is None or verdict.decision.allowed):
            self._refuse(flow, conn, Reason.QUARANTINED,
                         "this sandbox tried to send a secret where it may not go")
            return
        specs = entitled(sandbox, verdict)
        found: set[str] = set()
        for text in _request_text(flow.request):
            found |= placeholders.find(text)
        bindings = self.state.registry.placeholders.lookup_all(found)
        bound = {name for spec in specs for name in secret_names(spec)}
        leaks = {p: b for p, b in bindings.items()
                 if b.sandbox_id != sandbox.id or b.secret not in bound}
        if leaks:
            self._trip(flow, conn, list(leaks.values()))
        elif specs and verdict is not None:
            self._inject(flow, conn, specs, verdict)

    def _refuse(self, flow: http.HTTPFlow, conn: Conn, reason: Reason, error: str,
                secrets: tuple[str, ...] = ()) -> None:
        verdict = FlowVerdict(conn.sandbox.policy.refuse(reason), conn.target, conn.dialed_port,
                              error=error, secrets=secrets)
        flow.metadata[METADATA_KEY] = verdict
        flow.response = denial_response(verdict)

    def _trip(self, flow: http.HTTPFlow, conn: Conn, leaks: list[Binding]) -> None:
        names = tuple(sorted({b.secret for b in leaks}))
        foreign = any(b.sandbox_id != conn.sandbox.id for b in leaks)
        error = (f"placeholder of secret {', '.join(names)} sent to {conn.target}"
                 + (" (a placeholder of another sandbox)" if foreign else ""))
        logger.warning("sandbox %s: %s", conn.sandbox.id, error)
        self._refuse(flow, conn, Reason.SECRET_EXFIL_ATTEMPT, error, names)
        self.state.quarantine(conn.sandbox)

    def _inject(self, flow: http.HTTPFlow, conn: Conn, specs: list[Inject],
                verdict: FlowVerdict) -> None:
        vault = self.state.vault
        if vault is None:
            return
        sandbox = conn.sandbox
        try:
            for spec in specs:
                if isinstance(spec, InjectSigV4):
                    self._resign(flow, sandbox, spec)
                else:
                    _apply(flow.request, spec, sandbox.secrets[spec.secret],
                           vault.reveal(spec.secret).reveal(), self._username(spec, sandbox))
                for name in secret_names(spec):
                    vault.mark_used(name)
        except sigv4.SigV4Error as e:
            self._refuse(flow, conn, Reason.SIGV4_UNVERIFIED, str(e))
            return
        except VaultError as e:
            logger.error("cannot inject for sandbox %s: %s", sandbox.id, e)
            self._refuse(flow, conn, Reason.INTERNAL_ERROR, f"vault: {e}")
            return
        injected = tuple(sorted({n for spec in specs for n in secret_names(spec)}))
        flow.metadata[METADATA_KEY] = FlowVerdict(
            verdict.decision, verdict.host, verdict.port, verdict.upstream, verdict.error,
            secrets=injected)

    def _username(self, spec: Inject, sandbox: SandboxContext) -> str:
        """The user name a `basic` injection adds when the sandbox sent no Authorization."""
        if not isinstance(spec, InjectBasic):
            return ""
        if spec.username_secret and self.state.vault:
            return self.state.vault.reveal(spec.username_secret).reveal()
        return spec.username or ""

    def _resign(self, flow: http.HTTPFlow, sandbox: SandboxContext, spec: InjectSigV4) -> None:
        assert self.state.vault is not None
        request = flow.request
        key_id_placeholder = sandbox.secrets[spec.access_key_id]
        if key_id_placeholder not in request.headers.get("authorization", ""):
            return  # not signed with our placeholder: nothing to re-sign
        headers = {name.lower(): ",".join(request.headers.get_all(name))
                   for name in request.headers}
        if "host" not in headers and request.authority:
            headers["host"] = request.authority
        raw_path, _, raw_query = request.path.partition("?")
        signed = sigv4.SignedRequest(request.method, raw_path, raw_query, headers,
                                     request.raw_content or b"")
        request.headers["authorization"] = sigv4.resign(
            signed, placeholder_secret=sandbox.secrets[spec.secret],
            real_access_key_id=self.state.vault.reveal(spec.access_key_id).reveal(),
            real_secret=self.state.vault.reveal(spec.secret).reveal())

    # responses
    def response(self, flow: http.HTTPFlow) -> None:
        conn = self.state.conns.get(flow.client_conn.id)
        verdict = flow.metadata.get(METADATA_KEY)
        if conn is None or not isinstance(verdict, FlowVerdict) or flow.response is None:
            return
        specs = entitled(conn.sandbox, verdict)
        if not specs or self.state.vault is None:
            return
        swaps = {}
        for spec in specs:
            for name in secret_names(spec):
                swaps[self.state.vault.reveal(name).reveal()] = conn.sandbox.secrets[name]
        try:
            _scrub(flow.response, swaps)
        except ValueError as e:
            flow.metadata[METADATA_KEY] = FlowVerdict(
                Decision(Verdict.ERROR, Reason.RESPONSE_UNSCANNABLE, verdict.decision.rule,
                         verdict.decision.policy, verdict.decision.policy_version),
                verdict.host, verdict.port, verdict.upstream, str(e), verdict.secrets)
            flow.response = http.Response.make(
                502, json.dumps({"error": "response_unscannable", "host": verdict.host,
                                 "hint": str(e)}) + "\n",
                {"content-type": "application/json",
                 "x-sandgate-reason": str(Reason.RESPONSE_UNSCANNABLE)})


def _replace_everywhere(request: http.Request, old: str, new: str) -> None:
    request.path = request.path.replace(old, new)
    request.headers.fields = tuple(
        (k, v.replace(old.encode(), new.encode())) for k, v in request.headers.fields)
    body = request.raw_content
    if body and len(body) <= SCAN_LIMIT:
        content = request.get_content(strict=False) or b""
        if old.encode() in content:
            request.content = content.replace(old.encode(), new.encode())


def _apply(request: http.Request, spec: Inject, placeholder: str, value: str,
           username: str) -> None:
    """Replace the sandbox's placeholder wherever it is, then make sure the credential sits
    where the form puts it."""
    if isinstance(spec, InjectBasic):
        parsed = inject.parse_basic(request.headers.get("authorization", ""))
        if parsed is not None and placeholder in ":".join(parsed):
            user, password = (p.replace(placeholder, value) for p in parsed)
            request.headers["authorization"] = inject.basic(user, password)
        elif "authorization" not in request.headers:
            request.headers["authorization"] = inject.basic(username, value)
    _replace_everywhere(request, placeholder, value)
    if isinstance(spec, InjectBearer) and "authorization" not in request.headers:
        request.headers["authorization"] = inject.bearer(value)
    elif isinstance(spec, InjectHeader) and spec.header not in request.headers:
        request.headers[spec.header] = inject.fill(spec.template, value)
    elif isinstance(spec, InjectQuery) and spec.param not in request.query:
        request.query[spec.param] = value


def _scrub(response: http.Response, swaps: dict[str, str]) -> None:
    """Replace every real value by its placeholder. Raises ValueError when the body cannot be
    checked."""
    response.headers.fields = tuple(
        (k, _swap_bytes(v, swaps)) for k, v in response.headers.fields)
    raw = response.raw_content or b""
    if not raw:
        return
    if len(raw) > SCRUB_LIMIT:
        raise ValueError(f"response body of {len(raw)} bytes is over the {SCRUB_LIMIT} bytes "
                         "the gateway checks for leaked secrets")
    try:
        content = response.get_content(strict=True) or b""
    except ValueError:
        encoding = response.headers.get("content-encoding", "?")
        raise ValueError(f"response body with content-encoding {encoding!r} cannot be "
                         "decoded to check it for leaked secrets") from None
    scrubbed = _swap_bytes(content, swaps)
    if scrubbed != content:
        response.content = scrubbed


def _swap_bytes(data: bytes, swaps: dict[str, str]) -> bytes:
    for real, placeholder in swaps.items():
        data = data.replace(real.encode(), placeholder.encode())
    return data
