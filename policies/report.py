"""Reviewing policies: the question `sandgate policy test` asks and the whole answer the
gateway would give (its DNS step, the policy decision, the request-size and address checks
that follow, and on a denial the nearest rules with the condition each failed), and what a
policy allows (`explain`). Pure functions over compiled policies; `policy diff` lives in
policies.diff."""

from __future__ import annotations

import fnmatch
import ipaddress
import urllib.parse
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from policies.addresses import classify
from policies.budgets import show_period
from policies.decision import Decision, Reason
from policies.hosts import HostError, normalise_name
from policies.matcher import CompiledPolicy, CompiledRule, Miss, Request
from policies.mcp import CALL, McpMiss, check_call, check_method, describe
from policies.paths import AmbiguousPath
from policies.schema import Budget

DEFAULT_PORTS = {"http": 80, "https": 443}
NEAREST = 3   # rules listed after a denial


def request_from_url(method: str, url: str,
                     headers: Mapping[str, str] | Iterable[tuple[str, str]] = ()) -> Request:
    """The request `METHOD URL` would make, with `headers` as a mapping or as (name, value)
    pairs (a name may repeat). Schemes: http, https, tcp, tls (tcp://host:port). Raises
    ValueError with what to write instead."""
    parsed = urllib.parse.urlsplit(url)
    scheme = parsed.scheme.lower()
    if scheme not in ("http", "https", "tcp", "tls"):
        raise ValueError(f"URL {url!r}: scheme must be http, https, tcp or tls")
    if not parsed.hostname:
        raise ValueError(f"URL {url!r} names no host")
    try:
        explicit = parsed.port
    except ValueError:
        raise ValueError(f"URL {url!r} has an invalid port") from None
    if explicit is not None and not 1 <= explicit <= 65535:
        raise ValueError(f"URL {url!r}: port {explicit} is out of range 1-65535")
    port = explicit or DEFAULT_PORTS.get(scheme)
    if port is None:
        raise ValueError(f"URL {url!r}: {scheme} needs a port, as in {scheme}://host:5432")
    host: str | None
    address: ipaddress.IPv4Address | None = None
    try:
        address = ipaddress.IPv4Address(parsed.hostname)
        host = None
    except ValueError:
        try:
            host = normalise_name(parsed.hostname)
        except HostError as e:
            raise ValueError(str(e)) from None
    http = scheme in ("http", "https")
    fields: dict[str, list[str]] = {}
    for name, value in headers.items() if isinstance(headers, Mapping) else headers:
        fields.setdefault(name.lower(), []).append(value)
    if fields and not http:
        raise ValueError(f"headers belong to HTTP; {scheme}:// is a stream")
    query: dict[str, list[str]] = {}
    for key, value in urllib.parse.parse_qsl(parsed.query, keep_blank_values=True):
        query.setdefault(key, []).append(value)
    return Request(port=port, protocol=scheme, host=host, address=address,
                   method=method.upper() if http else None,
                   path=(parsed.path or "/") if http else None, query=query,
                   headers=fields)


def parse_header(text: str) -> tuple[str, str]:
    """`NAME:VALUE` (as curl's -H) into a pair. Raises ValueError."""
    name, sep, value = text.partition(":")
    if not sep or not name.strip():
        raise ValueError(f"header {text!r} is not NAME:VALUE; write -H 'accept: text/html'")
    return name.strip().lower(), value.strip()


@dataclass(frozen=True)
class McpCall:
    """A JSON-RPC message to ask about: `tools/call` of `tool` with string `arguments`, or
    another `method`."""

    method: str = CALL
    tool: str | None = None
    arguments: Mapping[str, str] = field(default_factory=dict)


def mcp_call(tool: str | None, args: Sequence[str] | Mapping[str, str] = (),
             method: str | None = None) -> McpCall | None:
    """The MCP message `policy test` asks about: `tool` (with `NAME=VALUE` args) or `method`.
    Raises ValueError with what to write instead."""
    if tool and method:
        raise ValueError("give --mcp-tool (a tools/call) or --mcp-method, not both")
    if args and not tool:
        raise ValueError("--mcp-arg belongs to a tools/call: add --mcp-tool NAME")
    if method:
        return McpCall(method=method)
    if not tool:
        return None
    if isinstance(args, Mapping):
        return McpCall(tool=tool, arguments=dict(args))
    arguments = {}
    for text in args:
        name, sep, value = text.partition("=")
        if not sep or not name:
            raise ValueError(f"--mcp-arg {text!r} is not NAME=VALUE; write --mcp-arg "
                             "repo=octo/hello")
        arguments[name] = value
    return McpCall(tool=tool, arguments=arguments)


@dataclass
class Trial:
    """What the gateway would do with one request: the decision, the steps that led to it,
    and on a denial the nearest rules and what each missed."""

    decision: Decision
    steps: list[str] = field(default_factory=list)
    nearest: list[str] = field(default_factory=list)
    path: str | None = None     # the canonical path matched, where rules have paths


def trial(policy: CompiledPolicy, request: Request, body_size: int = 0,
          resolves_to: ipaddress.IPv4Address | None = None,
          mcp: McpCall | None = None) -> Trial:
    """Ask `policy` about `request` as the gateway would: DNS first (a name no rule allows
    never resolves), then the decision, then the checks that follow an allow."""
    if request.host is not None:
        dns = policy.decide_name(request.host)
        if not dns.allowed:
            why = f"rule {dns.rule} denies it" if dns.rule else "no rule names it"
            result = Trial(dns, [f"dns: {request.host} gets NXDOMAIN ({why}); the sandbox "
                                 "never connects"])
            result.nearest = nearest(policy, request, dns)
            return result
        steps = [f"dns: {request.host} gets a synthetic address"]
    else:
        steps = [f"dial: {request.address} is an IP literal (allowed only by an address rule)"]
    path, path_steps = _path_steps(policy, request)
    decision = policy.decide(request)
    result = Trial(decision, steps + path_steps, path=path)
    if decision.reason == Reason.APPROVAL_REQUIRED and not decision.allowed:
        asked = f"rule {decision.rule}" if decision.rule else "on_unmatched: ask"
        result.steps.append(f"ask: held until a person allows it ({asked}; sandgate "
                            "approvals), denied if nobody does in time")
        return result
    if not decision.allowed:
        result.nearest = nearest(policy, request, decision)
        return result
    _after_allow(policy, request, body_size, resolves_to, result)
    if result.decision.allowed:
        _mcp_step(policy, mcp, result)
    return result


def _mcp_step(policy: CompiledPolicy, call: McpCall | None, result: Trial) -> None:
    """What the gateway does with the JSON-RPC body, when the allowing rule has `mcp:`."""
    grant, rule = result.decision.grant, result.decision.rule
    spec = grant.mcp if grant else None
    if spec is None:
        if call is not None:
            result.steps.append(f"mcp: rule {rule} has no `mcp:`; the JSON-RPC body is not "
                                "looked into (any tool, any method)")
        return
    if call is None:
        result.steps.append(f"mcp: rule {rule} reads the JSON-RPC body: {describe(spec)} "
                            "(--mcp-tool NAME tests a call)")
        return
    if call.method == CALL:
        refusal = check_call(spec, call.tool or "", call.arguments)
        what = f"tools/call {call.tool}"
    else:
        refusal = check_method(spec, call.method)
        what = call.method
    if refusal is None:
        result.steps.append(f"mcp: {what} is allowed by rule {rule}")
        return
    reason = Reason.MCP_METHOD_DENIED if refusal.miss == McpMiss.METHOD else \
        Reason.MCP_TOOL_DENIED
    result.decision = policy.refuse(reason, rule)
    result.steps.append(f"mcp: {refusal.text}: answered with a JSON-RPC error, never sent")


def _path_steps(policy: CompiledPolicy, request: Request) -> tuple[str | None, list[str]]:
    """The canonical path, and how the gateway reads it (docs/POLICY.md, Path semantics)."""
    try:
        path = policy.canonical_path(request)
    except AmbiguousPath as e:
        return None, [f"path: refused with 400, ambiguous_path ({e})"]
    if path is None:
        return None, []
    raw = (request.path or "").split("?", 1)[0]
    if path == raw:
        return path, [f"path: {path} (canonical; sent upstream as it is)"]
    return path, [f"path: {raw} is matched, and sent upstream, as {path}"]


def _after_allow(policy: CompiledPolicy, request: Request, body_size: int,
                 resolves_to: ipaddress.IPv4Address | None, result: Trial) -> None:
    grant = result.decision.grant
    networks = grant.networks if grant else ()
    steps = result.steps
    steps.append(f"policy: rule {result.decision.rule} allows it")
    limit = policy.limits.request_body_bytes
    if request.is_http and body_size > limit:
        result.decision = policy.refuse(Reason.BODY_TOO_LARGE, result.decision.rule)
        steps.append(f"body: {body_size} bytes is over the policy's request_body_bytes "
                     f"{limit}: refused with 413")
        return
    address = request.address or resolves_to
    if address is None:
        steps.append(f"upstream: the gateway resolves {request.host} itself and refuses "
                     "private, loopback, link-local and metadata addresses"
                     + (f" (this rule opens {', '.join(map(str, networks))})" if networks
                        else "") + "; --resolves-to IP checks one")
    elif why := classify(address, permitted=networks):
        result.decision = policy.refuse(Reason.REFUSED_ADDRESS, result.decision.rule)
        steps.append(f"upstream: {address} is never dialed ({why})")
        return
    else:
        steps.append(f"upstream: {address} may be dialed")
    if grant and grant.limits:
        limits = grant.limits.model_dump(exclude_none=True)
        steps.append("limits: " + ", ".join(f"{k} {v}" for k, v in limits.items())
                     + " per sandbox")
    if grant and grant.inject:
        steps.append("credentials: " + ", ".join(f"{i.secret} as {i.form}" for i in grant.inject))


def nearest(policy: CompiledPolicy, request: Request, decision: Decision) -> list[str]:
    """The allow rules closest to allowing `request`, each with the condition it failed;
    rules that name the destination first, then rules of the same site."""
    if decision.reason == Reason.DENIED_BY_RULE:
        lines = [f"{decision.rule}: a deny rule, and a matching deny wins over every allow"]
    else:
        lines = []
    path = _path(policy, request)
    misses = [(rule, miss) for rule in policy.candidates(request)
              if not rule.is_deny and (miss := rule.failed(request, path)) is not None]
    order = list(Miss)
    misses.sort(key=lambda m: (-order.index(m[1]), m[0].index))
    lines += [f"{rule.id}: {explain_miss(rule, miss, request, path)}"
              for rule, miss in misses[:NEAREST]]
    if not misses and request.host is not None:
        lines += _same_site(policy, request.host)
    return lines


def _path(policy: CompiledPolicy, request: Request) -> str | None:
    try:
        return policy.canonical_path(request)
    except AmbiguousPath:
        return None


def _same_site(policy: CompiledPolicy, host: str) -> list[str]:
    """Allow rules whose hosts share the last two labels of `host` but do not match it."""
    site = ".".join(host.split(".")[-2:])
    lines = []
    for rule in policy.rules:
        if rule.is_deny:
            continue
        close = [p for p in rule.spec.host_patterns()
                 if p.suffix == site or p.suffix.endswith("." + site) or
                 site.endswith("." + p.suffix)]
        if close:
            lines.append(f"{rule.id}: host {host} does not match "
                         f"{', '.join(str(p) for p in close)}")
        if len(lines) == NEAREST:
            break
    return lines


def explain_miss(rule: CompiledRule, miss: Miss, request: Request, path: str | None) -> str:
    """The condition `request` failed, in words: `method POST not in GET, HEAD`."""
    s = rule.spec
    if miss == Miss.PORT:
        return f"port {request.port} not in {', '.join(map(str, sorted(rule.ports)))}"
    if miss == Miss.PROTOCOL:
        return f"protocol {request.protocol} not in {', '.join(sorted(rule.protocols))}"
    if miss == Miss.NOT_HTTP:
        return f"a {request.protocol} stream, and the rule has HTTP conditions"
    if miss == Miss.METHOD:
        return f"method {request.method} not in {', '.join(s.methods)}"
    if miss == Miss.PATH:
        return f"path {path or request.path} matches none of {', '.join(s.paths)}"
    if miss == Miss.QUERY:
        return _query_miss(rule, request.query)
    for name, glob in s.headers.items():
        values = request.headers.get(name)
        if not values:
            return f"header {name} missing (needs {glob!r})"
        if failing := [v for v in values if not fnmatch.fnmatchcase(v, glob)]:
            return f"header {name}: {failing[0]!r} does not match {glob!r}" + \
                (f" (one of {len(values)} values; each must)" if len(values) > 1 else "")
    return "headers do not match"


def _query_miss(rule: CompiledRule, query: Mapping[str, Sequence[str]]) -> str:
    for name, glob, exactly_one in rule.query:
        values = query.get(name) or []
        if not values:
            return f"query parameter {name} missing (needs {glob!r})"
        if exactly_one and len(values) != 1:
            return f"query parameter {name} appears {len(values)} times (exactly_one)"
        if bad := [v for v in values if not fnmatch.fnmatchcase(v, glob)]:
            return f"query {name}={bad[0]!r} does not match {glob!r}"
    extra = sorted(set(query) - (rule.query_names or set()))
    return f"query parameter {extra[0]} is not one the rule names (only)" if extra \
        else "query does not match"


def verdict_line(trial_: Trial, policy: CompiledPolicy) -> str:
    d = trial_.decision
    return (f"{d.verdict}  rule={d.rule or '-'}  reason={d.reason}  "
            f"policy={policy.name}@{policy.version}")


def _join(values: object) -> str:
    items = [str(v) for v in values]  # type: ignore[attr-defined]
    return ",".join(items) if items else "*"


def explain_header(policy: CompiledPolicy) -> list[str]:
    """The policy-level facts: mode, sandbox limits, and `extends` as resolved (every
    policy whose rules are included, in decision order)."""
    spec = policy.spec
    limits = spec.limits
    defaults = "limits" not in spec.model_fields_set
    included = list(dict.fromkeys(r.origin for r in policy.rules if r.origin != policy.name))
    lines = [f"policy {policy.name} version {policy.version} mode {spec.mode}",
             f"limits per sandbox: connections {limits.connections}, request_body_bytes "
             f"{limits.request_body_bytes}" + (" (defaults)" if defaults else "")]
    if spec.budget is not None:
        lines.append("budget per sandbox: " + show_budget(spec.budget))
    if spec.extends:
        lines.append(f"extends {', '.join(spec.extends)}; rules included from: "
                     f"{', '.join(included) or '(none)'} (their own mode and limits do not "
                     "apply)")
    return lines


def show_budget(budget: Budget) -> str:
    parts = [f"{name}={value}" for name, value in (("bytes_up", budget.bytes_up),
                                                   ("requests", budget.requests))
             if value is not None]
    return " ".join(parts) + f" per {show_period(budget.per)}"


def explain_rows(policy: CompiledPolicy) -> list[dict[str, str]]:
    """One row per rule, in order, with its origin through `extends`."""
    rows = []
    for rule in policy.rules:
        s = rule.spec
        extra = []
        if s.paths_case_insensitive:
            extra.append("paths in any case")
        if s.query:
            extra.append("query " + " ".join(f"{k}={v}" for k, v in s.query.items()))
        if s.headers:
            extra.append("headers " + " ".join(f"{k}={v}" for k, v in s.headers.items()))
        if s.limits:
            limits = s.limits.model_dump(exclude_none=True)
            extra.append("limits " + " ".join(f"{k}={v}" for k, v in limits.items()))
        if s.budget:
            extra.append("budget " + show_budget(s.budget))
        if s.inject:
            extra.append("inject " + " ".join(f"{i.secret}:{i.form}" for i in s.inject))
        if s.mcp is not None:
            extra.append("mcp " + describe(s.mcp))
        if s.hosts and s.addresses:
            extra.append("may resolve to " + ",".join(s.addresses))
        destinations = s.hosts or s.addresses
        rows.append({
            "rule": rule.id, "action": s.action, "destinations": _join(destinations),
            "ports": _join(s.ports), "protocols": ",".join(sorted(rule.protocols)),
            "methods": _join(s.methods), "paths": _join(s.paths) if s.paths else "**",
            "also": "; ".join(extra), "from": rule.origin,
        })
    return rows
