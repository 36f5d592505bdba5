"""State the gateway addons share: live client connections, their permits, and the recorder
that turns a decision into one audit row."""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from mitmproxy import http, tcp

from gateway.dataplane.coordinator import Coordinator
from gateway.dataplane.leases import StreamLease
from gateway.dataplane.registry import Registry, SandboxContext
from gateway.dataplane.upstream import UpstreamResolver, Vetted
from gateway.dataplane.values import Values
from gateway.processes.budgets import Cap
from policies.decision import Decision
from vault.store import Vault

METADATA_KEY = "sandgate"          # FlowVerdict: the decision for the flow
PAUSED_KEY = "sandgate.paused"     # the flow paused its connection's reading (Reading.pause)
SENT_KEY = "sandgate.sent"         # Sent: the request as the sandbox sent it
SECRETS_KEY = "sandgate.secrets"   # FlowSecrets: what the credentials addon decided
COUNTS_KEY = "sandgate.counts"     # bodies.Counts: body bytes as they crossed the gateway


@dataclass
class Conn:
    """One TCP connection from a sandbox, as dialed (before the nft redirect)."""

    sandbox: SandboxContext
    dialed_ip: str
    dialed_port: int
    name: str | None                       # the name behind the dialed synthetic address
    started: float = field(default_factory=time.time)
    # (target, port) -> the vetted upstream address. server_connect dials nothing else.
    permits: dict[tuple[str, int], Vetted] = field(default_factory=dict)
    refused: Decision | None = None        # set when the connection itself was refused
    audited: bool = False                  # some row already speaks for this connection
    # the upstream's ALPN, once its TLS is up (b"h2" or not: how a streamed body is framed)
    upstream_alpn: bytes | None = None
    # requests streamed before the upstream's protocol was known (framed for HTTP/1 so far)
    framing_pending: list[Any] = field(default_factory=list)
    # the client certificate (an mtls secret's name, or none) every upstream connection of
    # this connection presents, fixed by its first allowed request (addons.credentials)
    client_cert: str | None = None
    client_cert_fixed: bool = False
    client_id: str = ""                    # mitmproxy's id of the client connection

    @property
    def target(self) -> str:
        return self.name or self.dialed_ip


@dataclass(frozen=True, slots=True)
class Budgeted:
    """A request admitted under budgets, and (when a byte budget applies) the lease its body
    or stream spends: its announced body's bytes, reserved, and what it leased beyond."""

    policy: str
    caps: tuple[Cap, ...]
    lease: StreamLease | None


@dataclass
class FlowVerdict:
    """Stored in flow.metadata: the decision for this flow and what we learned deciding it."""

    decision: Decision
    host: str
    port: int
    upstream: str | None = None
    error: str | None = None
    secrets: tuple[str, ...] = ()     # names of secrets injected (or caught leaking)
    budgeted: Budgeted | None = None  # the budgets it was counted against

    def redecided(self, decision: Decision, error: str | None) -> FlowVerdict:
        """The same request decided again, later in the pipeline (a body, an MCP message)."""
        return replace(self, decision=decision, error=error)


@dataclass(frozen=True, slots=True)
class Sent:
    """The request as the sandbox sent it, for the audit row: never after injection."""

    path: str             # without the query
    query: str | None     # redacted: no credential-like values, no placeholders
    headers: str          # JSON list: names, values only where allow-listed (redacted)


@dataclass(frozen=True, slots=True)
class FlowSecrets:
    """What the credentials addon decided for a request's body and its response."""

    allowed_in_body: frozenset[str] = frozenset()   # placeholders a `body` form replaces
    substitute: dict[str, str] = field(default_factory=dict)   # placeholder -> real value
    scrub: dict[bytes, bytes] | None = None          # real forms -> placeholder forms
    needs_body: bool = False       # SigV4 without x-amz-content-sha256: sign over the body
    # (spec, real access key id, real secret) of each SigV4 injection, read once at the head:
    # the re-signing over the body uses them, never a second read of the vault
    signing: tuple[tuple[Any, str, str], ...] = ()


def flow_verdict(flow: http.HTTPFlow | tcp.TCPFlow) -> FlowVerdict | None:
    """The flow's verdict, once the policy addons decided it."""
    verdict = flow.metadata.get(METADATA_KEY)
    return verdict if isinstance(verdict, FlowVerdict) else None


def flow_secrets(flow: http.HTTPFlow) -> FlowSecrets:
    """What the credentials addon decided for the flow (nothing, when it decided nothing)."""
    secrets = flow.metadata.get(SECRETS_KEY)
    return secrets if isinstance(secrets, FlowSecrets) else FlowSecrets()


class Reading(Protocol):
    """Stopping and resuming the reading of a client connection (dataplane.proxy.Pauser)."""

    def __call__(self, client_id: str) -> AbstractContextManager[None]: ...
    def pause(self, client_id: str) -> bool: ...
    def resume(self, client_id: str) -> None: ...
    def forget(self, client_id: str) -> None: ...


class NotPaused:
    """Without a proxy server (addon tests): nothing to pause."""

    def __call__(self, client_id: str) -> AbstractContextManager[None]:
        return nullcontext()

    def pause(self, client_id: str) -> bool:
        return False

    def resume(self, client_id: str) -> None:
        pass

    def forget(self, client_id: str) -> None:
        pass


class GatewayState:
    """What one proxy process's addons share; what all processes share goes through
    `coord` (gateway.processes.authority)."""

    def __init__(self, registry: Registry, resolver: UpstreamResolver,
                 coord: Coordinator) -> None:
        self.registry = registry
        self.resolver = resolver
        self.coord = coord
        self.conns: dict[str, Conn] = {}
        self.ready = False  # set once the proxy listens
        self.vault: Vault | None = None
        # the values injected: the vault's, or a provider's through `coord`
        self.values = Values(lambda: self.vault, coord)
        self.quarantine_on_exfil = True
        # cuts a flow's client and server connections at once (gateway.dataplane.proxy)
        self.cut: Callable[[Any], None] = lambda _flow: None
        # stops reading a client connection while a request of it waits (dataplane.proxy)
        self.hold: Reading = NotPaused()

    def quarantine(self, sandbox: SandboxContext) -> None:
        """After a secret-exfiltration attempt: nothing more goes out, here at once and in
        every other process as soon as it hears."""
        if self.quarantine_on_exfil:
            sandbox.quarantined = True
            self.coord.quarantine(sandbox.id)

    def record(self, decision: Decision, *, protocol: str, sandbox_id: str | None,
               conn: Conn | None = None, **fields: Any) -> None:
        if conn is not None:
            conn.audited = True
            fields.setdefault("owner", conn.sandbox.owner)
            fields.update(conn.sandbox.pod_fields())
        self.coord.record(dict(
            time=time.time(),
            sandbox_id=sandbox_id,
            policy=decision.policy,
            policy_version=decision.policy_version,
            rule=decision.rule,
            decision=str(decision.verdict),
            reason=str(decision.reason),
            protocol=protocol,
            **fields,
        ))


def peer_ip(peername: tuple[Any, ...] | None) -> str:
    if not peername:
        return ""
    ip = str(peername[0])
    return ip.removeprefix("::ffff:")
