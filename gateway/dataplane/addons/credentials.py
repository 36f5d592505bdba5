"""Credentials: a placeholder becomes the real value at its form's location, on the hosts its
rule binds it to, and nowhere else.

Request head (gateway.dataplane.injection): a placeholder anywhere but the legitimate spot of
an injection the allowing rule makes (other headers, path, other query parameters, cookies,
pseudo-headers; also on the bound host) trips the wire: 403 `secret_exfil_attempt`, audited
with the secret's name, and the sandbox is quarantined (by default). Otherwise the real values
go to their spots; SigV4 requests are verified against the placeholder credentials and signed
again with the real ones. The body is the Bodies addon's (the same tripwire, and the `body`
form's replacement); this addon tells it what the body may carry and what to scrub from the
response: every form of each real value sent (vault.scrub).

Response: headers and HTTP/2 trailers are scrubbed here, WebSocket messages too; a message
from the sandbox carrying a placeholder trips the wire and cuts the connection.

Values come from gateway.dataplane.values: the vault's, or the one a provider minted (a
failure answers 502 credential_unavailable). An `as: mtls` injection writes nothing: it fixes
the client certificate the connection's upstream TLS presents (addons.client_cert); a
connection presents one, so a request whose rule wants another is answered 421.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from mitmproxy import http

from gateway.dataplane import injection
from gateway.dataplane.denials import refuse
from gateway.dataplane.injection import secret_names
from gateway.dataplane.registry import SandboxContext
from gateway.dataplane.state import (
    METADATA_KEY,
    SECRETS_KEY,
    Conn,
    FlowSecrets,
    FlowVerdict,
    GatewayState,
    flow_secrets,
    flow_verdict,
)
from gateway.dataplane.values import CredentialError
from policies.decision import Reason, Verdict
from policies.schema import Inject, InjectBasic, InjectBody, InjectMtls, InjectSigV4
from vault import placeholders, scrub, sigv4
from vault.crypto import VaultError
from vault.placeholders import Binding

logger = logging.getLogger(__name__)


SCRUB_TABLES_KEPT = 256


def entitled(sandbox: SandboxContext, verdict: FlowVerdict | None) -> list[Inject]:
    """The allowing rule's injections whose secrets this sandbox holds."""
    if verdict is None or verdict.decision.verdict != Verdict.ALLOW:
        return []
    grant = verdict.decision.grant
    if grant is None:
        return []
    return [s for s in grant.inject if all(n in sandbox.secrets for n in secret_names(s))]


def _texts(fields: Iterable[tuple[bytes, bytes]]) -> list[bytes]:
    return [part for field in fields for part in field]


class Credentials:
    def __init__(self, state: GatewayState) -> None:
        self.state = state
        # (real, placeholder) pairs -> their scrub table: every form of every value (base64 at
        # three alignments, hex, percent) took most of the addon's time per request, for
        # the same few pairs over and over. Tables are shared by flows, read only.
        self._tables: dict[tuple[tuple[str, str], ...], dict[bytes, bytes]] = {}

    def _scrub_table(self, pairs: list[tuple[str, str]]) -> dict[bytes, bytes]:
        key = tuple(pairs)
        table = self._tables.get(key)
        if table is None:
            if len(self._tables) >= SCRUB_TABLES_KEPT:
                self._tables.clear()   # rotated values do not stay for long either
            table = self._tables[key] = scrub.swaps(key)
        return table

    def leaks(self, texts: Iterable[str | bytes]) -> list[Binding]:
        """The known placeholders (of any sandbox) in `texts`."""
        found: set[str] = set()
        for text in texts:
            found |= placeholders.find(text)
        return list(self.state.registry.placeholders.lookup_all(found).values())

    # requests
    async def requestheaders(self, flow: http.HTTPFlow) -> None:
        conn = self.state.conns.get(flow.client_conn.id)
        verdict = flow_verdict(flow)
        if conn is None or verdict is None or not verdict.decision.allowed or flow.response:
            return   # refused: nothing of it is looked into (nor decoded)
        specs = entitled(conn.sandbox, verdict)
        usernames = {i: s.username for i, s in enumerate(specs) if isinstance(s, InjectBasic)}
        query = injection.query_fields(flow.request)
        spots = injection.find_spots(flow.request, specs, conn.sandbox.secrets, usernames, query)
        leaks = self.leaks(injection.head_texts(flow.request, spots, query))
        if leaks:
            self.trip(flow, conn, leaks, "the request")
        elif self._client_cert(flow, conn, specs, verdict) and specs:
            await self._inject(flow, conn, specs, spots, verdict)

    def _client_cert(self, flow: http.HTTPFlow, conn: Conn, specs: list[Inject],
                     verdict: FlowVerdict) -> bool:
        """The connection's client certificate: fixed by its first allowed request, the same
        for every later one (each upstream connection of it presents that one, or none).
        False when the request was refused."""
        wanted = next((s.secret for s in specs if isinstance(s, InjectMtls)), None)
        rule = verdict.decision.rule
        if wanted is not None:
            try:
                self.state.values.client_identity(wanted)
            except CredentialError as e:
                self.refuse(flow, conn, e.reason, str(e), (wanted,), rule)
                return False
        if not conn.client_cert_fixed:
            conn.client_cert, conn.client_cert_fixed = wanted, True
        elif conn.client_cert != wanted:
            self.refuse(flow, conn, Reason.CLIENT_CERT_CONFLICT,
                        f"the connection presents {conn.client_cert or 'no client certificate'}"
                        f", this request's rule {wanted or 'none'}", rule=rule)
            return False
        return True

    def request(self, flow: http.HTTPFlow) -> None:
        """At the end of the request: HTTP/2 trailers through the tripwire; SigV4 signed over
        the body re-signed now that the body is here (held whole)."""
        conn = self.state.conns.get(flow.client_conn.id)
        verdict = flow_verdict(flow)
        if conn is None or verdict is None or not verdict.decision.allowed or flow.response:
            return
        if flow.request.trailers:
            leaks = self.leaks(_texts(flow.request.trailers.fields))
            if leaks:
                streamed = bool(flow.request.stream)
                self.trip(flow, conn, leaks, "the request trailers", answer=not streamed)
                if streamed:
                    self.state.cut(flow)
                return
        secrets = flow_secrets(flow)
        if secrets.needs_body:
            for spec, key_id, real in secrets.signing:
                if not self._resign(flow, conn, spec, key_id, real):
                    return

    async def _inject(self, flow: http.HTTPFlow, conn: Conn, specs: list[Inject],
                      spots: injection.Spots, verdict: FlowVerdict) -> None:
        vault = self.state.vault
        if vault is None:
            return
        sandbox, pairs, substitute = conn.sandbox, [], {}
        # signed over the body (no x-amz-content-sha256) and a body may follow: re-signed in
        # `request`, once the body is held
        signed_over_body = "x-amz-content-sha256" not in flow.request.headers and \
            not injection.bodiless(flow.request)
        names = tuple(sorted({n for spec in specs for n in secret_names(spec)}))
        signing: list[tuple[InjectSigV4, str, str]] = []
        try:
            reals = await self._values(specs, sandbox.id)
            stored = self._stored(specs)
            for index, real in reals.items():
                spec = specs[index]
                own = sandbox.secrets[spec.secret]
                pairs += [(real, own), *self._related(spec, real, own, sandbox, stored)]
                if isinstance(spec, InjectBody):
                    substitute[own] = real
                elif isinstance(spec, InjectSigV4):
                    signing.append((spec, stored[spec.access_key_id], real))
                    # signed over the body (no x-amz-content-sha256): re-signed in `request`
                    if not signed_over_body and not self._resign(flow, conn, *signing[-1]):
                        return
                else:
                    injection.write(flow.request, spec, real, self._username(spec, stored),
                                    present=index in spots.present)
            for name in names:
                vault.mark_used(name)
        except CredentialError as e:
            logger.error("cannot inject for sandbox %s: %s", sandbox.id, e)
            self.refuse(flow, conn, e.reason, str(e), names, verdict.decision.rule)
            return
        except VaultError as e:
            logger.error("cannot inject for sandbox %s: %s", sandbox.id, e)
            self.refuse(flow, conn, Reason.INTERNAL_ERROR, f"vault: {e}")
            return
        needs_body = signed_over_body and any(isinstance(s, InjectSigV4) for s in specs)
        flow.metadata[SECRETS_KEY] = FlowSecrets(frozenset(substitute), substitute,
                                                 self._scrub_table(pairs), needs_body,
                                                 tuple(signing))
        flow.metadata[METADATA_KEY] = FlowVerdict(
            verdict.decision, verdict.host, verdict.port, verdict.upstream, verdict.error,
            secrets=names)

    async def _values(self, specs: list[Inject], sandbox_id: str) -> dict[int, str]:
        """The value each spec injects (by its index). Whatever goes wrong getting one (the
        hub gone, say) refuses the request: it never leaves without its credential."""
        try:
            return {index: (await self.state.values.value(spec, sandbox_id)).reveal()
                    for index, spec in enumerate(specs) if not isinstance(spec, InjectMtls)}
        except (CredentialError, VaultError):
            raise
        except Exception as e:
            logger.exception("cannot get a value for sandbox %s", sandbox_id)
            raise CredentialError(Reason.INTERNAL_ERROR,
                                  f"the gateway failed to get a value ({type(e).__name__})") \
                from None

    def _stored(self, specs: list[Inject]) -> dict[str, str]:
        """The stored values a spec uses beside its secret (a SigV4 access key id, a `basic`
        user name that is a secret), each read once for the request."""
        assert self.state.vault is not None
        names = {name for spec in specs for name in (getattr(spec, "access_key_id", None),
                                                     getattr(spec, "username_secret", None))
                 if name}
        return {name: self.state.vault.reveal(name).reveal() for name in names}

    def _related(self, spec: Inject, real: str, own: str, sandbox: SandboxContext,
                 stored: dict[str, str]) -> list[tuple[str, str]]:
        """Other values to scrub with a secret: a `Basic` header as written (base64 of user
        and secret together), a user name or key id that is a secret too."""
        pairs = []
        for name in (getattr(spec, "access_key_id", None),
                     getattr(spec, "username_secret", None)):
            if name:
                pairs.append((stored[name], sandbox.secrets[name]))
        if isinstance(spec, InjectBasic):
            # the value sits inside base64 with the user name; bearer and header forms hold
            # the value as it is, which its own forms cover
            written = injection.render(spec, real, self._username(spec, stored))
            placeholder_form = injection.render(spec, own, self._username(spec, sandbox.secrets))
            pairs.append((written or "", placeholder_form or ""))
        return pairs

    @staticmethod
    def _username(spec: Inject, values: dict[str, str]) -> str:
        """The user name a `basic` injection writes, its secret looked up in `values` (the
        real ones, or the sandbox's placeholders)."""
        if not isinstance(spec, InjectBasic):
            return ""
        if not spec.username_secret:
            return spec.username or ""
        return values[spec.username_secret]

    def _resign(self, flow: http.HTTPFlow, conn: Conn, spec: InjectSigV4, key_id: str,
                real: str) -> bool:
        """Re-sign a request signed with the sandbox's placeholder key id (one signed
        otherwise is left alone) with the real `key_id` and secret `real`; False when it was
        refused."""
        request, sandbox = flow.request, conn.sandbox
        if not injection.holds(spec, request.headers.get("authorization", ""), sandbox.secrets,
                               None):
            return True
        headers = {name.lower(): ",".join(request.headers.get_all(name))
                   for name in request.headers}
        if "host" not in headers and request.authority:
            headers["host"] = request.authority
        raw_path, _, raw_query = request.path.partition("?")
        signed = sigv4.SignedRequest(request.method, raw_path, raw_query, headers,
                                     request.raw_content or b"")
        try:
            request.headers["authorization"] = sigv4.resign(
                signed, placeholder_secret=sandbox.secrets[spec.secret],
                real_access_key_id=key_id, real_secret=real)
        except sigv4.SigV4Error as e:
            self.refuse(flow, conn, Reason.SIGV4_UNVERIFIED, str(e))
            return False
        return True

    # refusals
    def refuse(self, flow: http.HTTPFlow, conn: Conn, reason: Reason, error: str,
               secrets: tuple[str, ...] = (), rule: str | None = None) -> None:
        verdict = FlowVerdict(conn.sandbox.policy.refuse(reason, rule), conn.target,
                              conn.dialed_port, error=error, secrets=secrets)
        refuse(flow, verdict, self.state)

    def trip(self, flow: http.HTTPFlow, conn: Conn, leaks: list[Binding], where: str,
             answer: bool = True) -> None:
        """A placeholder where it may not go: refused (or, mid-stream, only marked: the
        caller cuts the connection), audited with the secrets' names, and the sandbox
        quarantined."""
        names = tuple(sorted({b.secret for b in leaks}))
        foreign = any(b.sandbox_id != conn.sandbox.id for b in leaks)
        error = (f"placeholder of secret {', '.join(names)} in {where} to {conn.target}"
                 + (" (a placeholder of another sandbox)" if foreign else ""))
        logger.warning("sandbox %s: %s", conn.sandbox.id, error)
        if answer:
            self.refuse(flow, conn, Reason.SECRET_EXFIL_ATTEMPT, error, names)
        else:
            flow.metadata[METADATA_KEY] = FlowVerdict(
                conn.sandbox.policy.refuse(Reason.SECRET_EXFIL_ATTEMPT), conn.target,
                conn.dialed_port, error=error, secrets=names)
        self.state.quarantine(conn.sandbox)

    # responses
    def responseheaders(self, flow: http.HTTPFlow) -> None:
        table = flow_secrets(flow).scrub
        if table and flow.response is not None:
            flow.response.headers.fields = tuple(
                (k, scrub.scrub(v, table)) for k, v in flow.response.headers.fields)

    def response(self, flow: http.HTTPFlow) -> None:
        table = flow_secrets(flow).scrub
        if table and flow.response is not None and flow.response.trailers:
            flow.response.trailers.fields = tuple(
                (k, scrub.scrub(v, table)) for k, v in flow.response.trailers.fields)

    # WebSocket
    def websocket_message(self, flow: http.HTTPFlow) -> None:
        assert flow.websocket is not None
        message = flow.websocket.messages[-1]
        # mitmproxy keeps every message of a connection; only the last one is needed
        del flow.websocket.messages[:-1]
        conn = self.state.conns.get(flow.client_conn.id)
        if conn is None:
            return
        if not message.from_client:
            table = flow_secrets(flow).scrub
            if table:
                message.content = scrub.scrub(message.content, table)
            return
        leaks = self.leaks([message.content])
        if leaks:
            message.drop()
            self.trip(flow, conn, leaks, "a WebSocket message", answer=False)
            verdict = flow.metadata[METADATA_KEY]
            self.state.record(verdict.decision, protocol="ws", sandbox_id=conn.sandbox.id,
                              conn=conn, host=conn.target, port=conn.dialed_port,
                              secrets=",".join(verdict.secrets), error=verdict.error)
            self.state.cut(flow)
