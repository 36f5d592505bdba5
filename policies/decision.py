"""Decision objects: every egress decision starts as a denial and says why."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from policies.matcher import Grant


class Verdict(enum.StrEnum):
    ALLOW = "allow"
    DENY = "deny"
    WOULD_DENY = "would_deny"
    ERROR = "error"


class Reason(enum.StrEnum):
    """The one enumeration of reasons, shared by the policy engine and the gateway.

    Documented for users in docs/AUDIT.md; keep both in step.
    """

    # policy engine
    NO_MATCHING_RULE = "no_matching_rule"
    DENIED_BY_RULE = "denied_by_rule"
    ALLOWED_BY_RULE = "allowed_by_rule"
    AMBIGUOUS_PATH = "ambiguous_path"
    RATE_LIMITED = "rate_limited"
    # approvals (an `ask` rule, `on_unmatched: ask`)
    APPROVAL_REQUIRED = "approval_required"    # held for a person; final only where none asks
    APPROVED = "approved"                      # a person allowed it (or an earlier approval)
    APPROVAL_DENIED = "approval_denied"        # a person denied it
    APPROVAL_TIMEOUT = "approval_timeout"      # nobody decided in time
    BUDGET_EXCEEDED = "budget_exceeded"        # a rule's or the sandbox's budget is spent
    # policy engine: MCP servers (a rule's `mcp:`)
    MCP_TOOL_DENIED = "mcp_tool_denied"        # tools/call of a tool (or arguments) not allowed
    MCP_METHOD_DENIED = "mcp_method_denied"    # a JSON-RPC method (or posted response) not allowed
    MCP_UNPARSEABLE = "mcp_unparseable"        # not JSON-RPC the gateway can read, so refused
    # gateway: who is asking
    UNKNOWN_SANDBOX = "unknown_sandbox"
    # gateway: names and addresses
    NOT_FROM_GATEWAY_DNS = "not_from_gateway_dns"
    SNI_MISMATCH = "sni_mismatch"
    MISSING_SNI = "missing_sni"
    HOST_MISMATCH = "host_mismatch"
    REFUSED_ADDRESS = "refused_address"
    UPSTREAM_UNRESOLVABLE = "upstream_unresolvable"
    UNSUPPORTED_PROTOCOL = "unsupported_protocol"
    PROTOCOL_MISMATCH = "protocol_mismatch"    # an opaque stream where the rules speak HTTP
    PROTOCOL_ERROR = "protocol_error"          # malformed or ambiguous (smuggling) requests
    CONNECTION_LIMIT = "connection_limit"
    BODY_TOO_LARGE = "body_too_large"
    # gateway: credentials
    SECRET_EXFIL_ATTEMPT = "secret_exfil_attempt"  # noqa: S105 - a reason code
    QUARANTINED = "quarantined"
    SIGV4_UNVERIFIED = "sigv4_unverified"
    RESPONSE_UNSCANNABLE = "response_unscannable"
    CREDENTIAL_REFRESHED = "credential_refreshed"      # a provider minted a value (audit only)
    CREDENTIAL_UNAVAILABLE = "credential_unavailable"  # a provider gave none
    CLIENT_CERT_CONFLICT = "client_cert_conflict"      # another identity on this connection
    # gateway: the conversation itself
    CLIENT_TLS_FAILED = "client_tls_failed"
    UPSTREAM_ERROR = "upstream_error"
    INTERNAL_ERROR = "internal_error"


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome of one check. Construct through `deny` / `allow`; the default is deny."""

    verdict: Verdict = Verdict.DENY
    reason: Reason = Reason.NO_MATCHING_RULE
    rule: str | None = None
    policy: str | None = None
    policy_version: str | None = None
    grant: Grant | None = None   # limits and injections of the allowing rule
    path: str | None = None      # the canonical path matched, to be sent upstream as such

    @property
    def allowed(self) -> bool:
        return self.verdict in (Verdict.ALLOW, Verdict.WOULD_DENY)

    def failed(self, reason: Reason) -> Decision:
        """This decision's rule and policy, but the exchange broke for `reason`."""
        return Decision(Verdict.ERROR, reason, self.rule, self.policy, self.policy_version)


def deny(reason: Reason, *, rule: str | None = None, policy: str | None = None,
         policy_version: str | None = None) -> Decision:
    return Decision(Verdict.DENY, reason, rule, policy, policy_version)


def allow(rule: str, *, policy: str, policy_version: str, grant: Grant | None = None,
          path: str | None = None) -> Decision:
    return Decision(Verdict.ALLOW, Reason.ALLOWED_BY_RULE, rule, policy, policy_version, grant,
                    path)
