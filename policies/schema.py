"""The YAML shape of a policy file (version 1). Separate from the compiled model in matcher.py.

Unknown keys are errors everywhere: a misspelt condition must never silently widen a rule.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictInt,
    model_validator,
)

from policies.budgets import parse_period, parse_size
from policies.hosts import HostPattern, parse_pattern
from policies.paths import parse_path_glob

NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
RULE_ID = r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$"
# A secret's name: it becomes an environment variable in the sandbox.
SECRET_NAME = r"^[A-Za-z_][A-Za-z0-9_]{0,127}$"  # noqa: S105 - a pattern, not a secret
HEADER_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE")
PROTOCOLS = ("http", "https", "tcp", "tls")


def _host(text: str) -> str:
    return str(parse_pattern(text))


def _whole_number(value: Any) -> Any:
    """`ports: [true]` or `[443.0]` must not quietly become a port: only integers are."""
    if isinstance(value, bool) or not isinstance(value, int):
        shown = str(value).lower() if isinstance(value, bool) else repr(value)
        raise ValueError(f"port {shown} is not a whole number; write it as 443")
    return value


def _port(port: int) -> int:
    if not 1 <= port <= 65535:
        raise ValueError(f"port {port} is out of range 1-65535")
    return port


def _address(text: str) -> str:
    try:
        network = ipaddress.ip_network(text.strip(), strict=False)
    except ValueError:
        raise ValueError(f"{text!r} is not an IP address or CIDR "
                         "(host names go under `hosts`)") from None
    if network.version != 4:
        raise ValueError(f"{text!r}: sandboxes speak IPv4 only; IPv6 addresses cannot match")
    return str(network)


def _method(text: str) -> str:
    upper = text.strip().upper()
    if upper not in METHODS:
        raise ValueError(f"unknown HTTP method {text!r}; use one of {', '.join(METHODS)}")
    return upper


def _path(text: str) -> str:
    parse_path_glob(text)  # raises ValueError with the fix
    return text


def _header_name(text: str) -> str:
    if not HEADER_NAME.match(text):
        raise ValueError(f"{text!r} is not a valid HTTP header name")
    return text.lower()


HostText = Annotated[str, AfterValidator(_host)]
Port = Annotated[StrictInt, BeforeValidator(_whole_number), AfterValidator(_port)]
AddressText = Annotated[str, AfterValidator(_address)]
Method = Annotated[str, AfterValidator(_method)]
PathGlob = Annotated[str, AfterValidator(_path)]
HeaderName = Annotated[str, AfterValidator(_header_name)]
SecretName = Annotated[str, Field(pattern=SECRET_NAME)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Limits(_Strict):
    requests_per_minute: StrictInt | None = Field(default=None, ge=1)
    bytes_per_minute: StrictInt | None = Field(default=None, ge=1)


class Budget(_Strict):
    """How much may leave in each period (`per`, fixed windows aligned to the epoch):
    request-body bytes and requests. On a rule: per sandbox, for that rule; at policy level:
    per sandbox, all rules together (docs/POLICY.md, Budgets)."""

    bytes_up: Annotated[int, BeforeValidator(parse_size)] | None = None
    requests: StrictInt | None = Field(default=None, ge=1)
    per: Annotated[int, BeforeValidator(parse_period)]

    @model_validator(mode="after")
    def _something(self) -> Budget:
        if self.bytes_up is None and self.requests is None:
            raise ValueError("a budget needs `bytes_up`, `requests` or both")
        return self


class SandboxLimits(_Strict):
    """Per sandbox, whatever the rule: bounds on what one sandbox can make the gateway hold,
    so a misbehaving sandbox cannot stall the others. Safe defaults apply when absent."""

    connections: StrictInt = Field(default=256, ge=1, le=100_000)
    request_body_bytes: StrictInt = Field(default=100 * 1024 * 1024, ge=0)
    response_body_bytes: StrictInt | None = Field(default=None, ge=0)   # None: no limit


def _pairs(value: Any) -> Any:
    """`{contents: read}` as sorted (name, level) pairs (pairs stay pairs)."""
    if isinstance(value, dict):
        return tuple(sorted(value.items()))
    if isinstance(value, list | tuple) and all(isinstance(p, list | tuple) for p in value):
        return tuple(sorted(tuple(p) for p in value))
    raise ValueError("permissions is a mapping such as {contents: read, issues: write}")


# Credential injection forms (the vault consumes these; see docs/POLICY.md).
class Narrow(_Strict):
    """What a credential a provider mints for this rule may do, narrower than the provider's
    default: a GitHub App token limited to some repositories and permissions, an OAuth2 or
    Google access token with fewer scopes, a Google ID token for this audience."""

    # tuples, not lists and dicts: a rule's grant is hashed
    repositories: tuple[Annotated[str, Field(pattern=r"^[A-Za-z0-9._-]+$")], ...] = ()
    permissions: Annotated[tuple[tuple[Annotated[str, Field(pattern=r"^[a-z_]+$")],
                                       Literal["read", "write", "admin"]], ...],
                           BeforeValidator(_pairs)] = ()
    scopes: tuple[Annotated[str, Field(min_length=1)], ...] = ()
    audience: str | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _something(self) -> Narrow:
        if not (self.repositories or self.permissions or self.scopes or self.audience):
            raise ValueError("narrow needs repositories, permissions, scopes or audience")
        return self


class _Inject(_Strict):
    secret: SecretName
    narrow: Narrow | None = None   # for secrets a provider mints (vault.providers)


class InjectBearer(_Inject):
    form: Literal["bearer"] = Field(alias="as")


class InjectHeader(_Inject):
    form: Literal["header"] = Field(alias="as")
    header: HeaderName
    template: str = "{value}"

    @model_validator(mode="after")
    def _template(self) -> InjectHeader:
        if self.template.count("{value}") != 1:
            raise ValueError("template must contain {value} exactly once")
        return self


class InjectBasic(_Inject):
    form: Literal["basic"] = Field(alias="as")
    username: str | None = None       # fixed user name; the secret is the password
    username_secret: SecretName | None = None  # or the user name is a secret too


class InjectQuery(_Inject):
    form: Literal["query"] = Field(alias="as")
    param: str = Field(min_length=1)


class InjectBody(_Inject):
    """The placeholder is replaced by the real value wherever it appears in the request body,
    for the APIs that want a credential there. The risk, chosen knowingly: whatever the body
    carries, the bound host receives and may echo, transformed past any scrubbing
    (docs/POLICY.md)."""

    form: Literal["body"] = Field(alias="as")


class InjectSigV4(_Inject):
    """`secret` holds the secret access key; `access_key_id` names the secret that holds the
    access key id. The sandbox signs with placeholders; the gateway re-signs."""

    form: Literal["aws-sigv4"] = Field(alias="as")
    access_key_id: SecretName

    @model_validator(mode="after")
    def _static(self) -> InjectSigV4:
        if self.narrow is not None:
            raise ValueError("aws-sigv4 signs with stored keys: `narrow` does not apply")
        return self


class InjectMtls(_Inject):
    """`secret` is an mtls_client_cert provider: the gateway presents its certificate in
    the TLS handshake with the rule's hosts. Nothing is written into the request."""

    form: Literal["mtls"] = Field(alias="as")

    @model_validator(mode="after")
    def _unnarrowed(self) -> InjectMtls:
        if self.narrow is not None:
            raise ValueError("a client certificate is presented as it is: `narrow` does not "
                             "apply to `as: mtls`")
        return self


Inject = Annotated[InjectBearer | InjectHeader | InjectBasic | InjectQuery | InjectBody
                   | InjectSigV4 | InjectMtls, Field(discriminator="form")]
INJECT_FORMS = ("bearer", "header", "basic", "query", "body", "aws-sigv4", "mtls")


class QueryCondition(_Strict):
    """A query parameter a rule requires. An allow rule needs the parameter present and every
    value of it matching `match`; a deny rule fires when any value matches."""

    match: str = "*"
    exactly_one: bool = False   # the parameter appears once, not repeated
    only: bool = False          # no parameter the rule does not name may appear

    def __str__(self) -> str:
        flags = [f for f, on in (("exactly_one", self.exactly_one), ("only", self.only)) if on]
        return self.match + (f" [{', '.join(flags)}]" if flags else "")


def _query_condition(value: Any) -> Any:
    """`name: glob` is short for `name: {match: glob}`."""
    if isinstance(value, str):
        return {"match": value}
    if not isinstance(value, dict):
        raise ValueError(f"{value!r}: a query condition is a glob such as \"*\" or a mapping "
                         "{match: GLOB, exactly_one: true, only: true}")
    return value


QueryEntry = Annotated[QueryCondition, BeforeValidator(_query_condition)]


def _mcp_glob(text: str) -> str:
    if not text or text != text.strip() or any(c in text for c in "\r\n\0"):
        raise ValueError(f"{text!r} is not a tool or method name glob (no spaces at the ends, "
                         "no control characters)")
    return text


def _mcp_method(text: str) -> str:
    _mcp_glob(text)
    if text == "tools/call":
        raise ValueError("tools/call is decided by `tools` and `deny_tools`, not `methods`")
    return text


McpGlob = Annotated[str, Field(max_length=200), AfterValidator(_mcp_glob)]
McpMethod = Annotated[str, Field(max_length=200), AfterValidator(_mcp_method)]


class McpSpec(_Strict):
    """What an MCP server reached over streamable HTTP may be asked (policies.mcp gives the
    meaning). Deny first: a tool no `tools` glob names cannot be called."""

    tools: list[McpGlob] = Field(default_factory=list)        # tools/call allowed for these
    deny_tools: list[McpGlob] = Field(default_factory=list)   # never, whatever `tools` says
    methods: list[McpMethod] = Field(default_factory=list)    # JSON-RPC methods beyond the base
    args: dict[Annotated[str, Field(min_length=1, max_length=200)], str] = Field(
        default_factory=dict)                                  # top-level string args by glob

    def __hash__(self) -> int:   # a grant: compared and bucketed by policies.precedence
        return hash((tuple(self.tools), tuple(self.deny_tools), tuple(self.methods),
                     frozenset(self.args.items())))


class RuleSpec(_Strict):
    id: str = Field(min_length=1, max_length=100, pattern=RULE_ID)
    description: str = ""
    # ask: held until a person decides (docs/POLICY.md, Approvals)
    action: Literal["allow", "deny", "ask"] = "allow"
    hosts: list[HostText] = Field(default_factory=list)
    addresses: list[AddressText] = Field(default_factory=list)
    ports: list[Port] = Field(default_factory=list)
    protocols: list[Literal["http", "https", "tcp", "tls"]] = Field(default_factory=list)
    methods: list[Method] = Field(default_factory=list)
    paths: list[PathGlob] = Field(default_factory=list)
    paths_case_insensitive: bool = False    # `/Admin/x` matches `/admin/**`
    query: dict[str, QueryEntry] = Field(default_factory=dict)
    headers: dict[HeaderName, str] = Field(default_factory=dict)
    mcp: McpSpec | None = None
    limits: Limits | None = None
    budget: Budget | None = None
    inject: list[Inject] = Field(default_factory=list)
    # Injection is over HTTPS to named hosts unless the policy says otherwise, knowingly:
    allow_cleartext_inject: bool = False    # `protocols` may then list http
    allow_wildcard_inject: bool = False     # `hosts` may then hold wildcards

    @model_validator(mode="after")
    def _coherent(self) -> RuleSpec:
        if not self.hosts and not self.addresses:
            raise ValueError("a rule needs `hosts` or `addresses` (deny first: an empty rule "
                             "would match nothing)")
        if self.http_only and self.protocols and not set(self.protocols) & {"http", "https"}:
            raise ValueError("methods, paths, query, headers, mcp and inject apply to HTTP; "
                             "add http or https to `protocols`")
        if self.paths_case_insensitive and not self.paths:
            raise ValueError("`paths_case_insensitive` applies to `paths`; the rule has none")
        if self.inject and self.action == "deny":
            raise ValueError("a deny rule cannot inject credentials")
        if self.action == "ask" and (self.inject or self.mcp is not None):
            raise ValueError("an ask rule cannot inject credentials or carry `mcp`: a person "
                             "approves a request, not what the gateway adds to it")
        if self.budget is not None and self.action == "deny":
            raise ValueError("a deny rule sends nothing: `budget` belongs on allow rules")
        if self.mcp is not None and self.action == "deny":
            raise ValueError("a deny rule cannot carry `mcp`: deny the whole server with a deny "
                             "rule, or list the tools under `mcp.deny_tools` of the allow rule")
        if self.inject:
            self._check_inject()
        if self.action == "deny" and any(q.exactly_one or q.only for q in self.query.values()):
            raise ValueError("`exactly_one` and `only` narrow allow rules; a deny rule fires "
                             "when any value of its query parameters matches")
        return self

    def _check_inject(self) -> None:
        if "http" in self.protocols and not self.allow_cleartext_inject:
            raise ValueError("inject over plain http sends the credential in clear text to "
                             "every hop; use `protocols: [https]`, or add "
                             "`allow_cleartext_inject: true` if you mean it")
        if sum(isinstance(i, InjectMtls) for i in self.inject) > 1:
            raise ValueError("a connection presents one client certificate: one `as: mtls` "
                             "per rule")
        wildcards = [h for h in self.hosts if h.startswith(("*.", "."))]
        if wildcards and not self.allow_wildcard_inject:
            raise ValueError(f"inject to wildcard hosts ({', '.join(wildcards)}) hands the "
                             "credential to every name below them; list the hosts, or add "
                             "`allow_wildcard_inject: true` if you mean it")

    def host_patterns(self) -> list[HostPattern]:
        return [parse_pattern(h) for h in self.hosts]

    @property
    def http_only(self) -> bool:
        return bool(self.methods or self.paths or self.query or self.headers or self.inject
                    or self.mcp is not None)


# a Kubernetes namespace is a DNS label (RFC 1123)
K8S_NAMESPACE = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"


class KubernetesSpec(_Strict):
    """Which Kubernetes namespaces' pods may run under this policy (their annotation
    `sandgate.dev/policy` names it). A policy without this key serves no pod: whoever may
    create a pod must not pick another team's, or the most permissive, policy."""

    namespaces: list[Annotated[str, Field(pattern=K8S_NAMESPACE)]] = Field(
        default_factory=list, max_length=1000)


class PolicySpec(_Strict):
    version: Literal[1]
    name: str = Field(min_length=1, max_length=100, pattern=NAME)
    description: str = ""
    mode: Literal["enforce", "monitor"] = "enforce"
    # what a request no rule decides gets: denied, or held for a person (Approvals)
    on_unmatched: Literal["deny", "ask"] = "deny"
    extends: list[Annotated[str, Field(pattern=NAME)]] = Field(default_factory=list)
    limits: SandboxLimits = Field(default_factory=SandboxLimits)
    budget: Budget | None = None        # per sandbox, every rule together
    rules: list[RuleSpec] = Field(default_factory=list)
    # the pods that may name it (sandgate-cni); not inherited through `extends`
    kubernetes: KubernetesSpec | None = None
