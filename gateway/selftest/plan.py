"""What to try against a policy: one request per allowing rule (a concrete host, port, method,
path, query and headers the rule allows, checked with the policy engine itself), and a name
the policy does not allow."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from policies.decision import Verdict
from policies.matcher import CompiledPolicy, CompiledRule, Request
from policies.schema import InjectBasic, InjectSigV4
from sandbox_net.testnet import HTTP_IP, HTTPS_IP

# The throw-away internet's web servers: port -> TLS?
SERVER_PORTS = {80: False, 8080: False, 443: True, 8443: True}
FILLER = "sandgate-selftest"
DENIED_CANDIDATES = ["sandgate-selftest-denied.example", "denied.sandgate-selftest.invalid",
                     "sandgate-selftest-denied.test"]
MAX_PROBES = 5


@dataclass(frozen=True)
class Probe:
    """One request a rule allows, sent to the throw-away web server for its port."""

    rule: str
    host: str
    port: int
    tls: bool
    method: str
    path: str                          # with the query
    headers: dict[str, str]
    secrets: tuple[str, ...]           # the vault secrets the rule injects

    @property
    def address(self) -> str:
        return HTTPS_IP if self.tls else HTTP_IP

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}{self.path}"


@dataclass
class Plan:
    probes: list[Probe] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)    # "rule X: why not probed"
    denied_name: str | None = None                      # None: the policy allows them all
    tcp_rules: bool = False


def make_plan(policy: CompiledPolicy) -> Plan:
    plan = Plan(denied_name=_denied_name(policy),
                tcp_rules=any("tcp" in r.protocols and not r.is_deny for r in policy.rules))
    hosts: set[str] = set()
    for rule in policy.rules:
        if rule.is_deny or not rule.spec.hosts:
            continue
        probe, why = _probe(policy, rule)
        if probe is None:
            plan.skipped.append(f"rule {rule.id}: {why}")
        elif probe.host not in hosts and len(plan.probes) < MAX_PROBES:
            hosts.add(probe.host)
            plan.probes.append(probe)
    return plan


def _probe(policy: CompiledPolicy, rule: CompiledRule) -> tuple[Probe | None, str]:
    spec = rule.spec
    if any(isinstance(i, InjectSigV4) for i in spec.inject):
        return None, "signs with AWS SigV4, which needs an AWS client in the sandbox"
    port = _port(rule)
    if port is None:
        return None, ("no HTTP(S) port the self-test serves (it has web servers on "
                      f"{', '.join(map(str, SERVER_PORTS))})")
    pattern = spec.host_patterns()[0]
    host = pattern.suffix if pattern.apex else f"{FILLER}.{pattern.suffix}"
    method = "GET" if not rule.methods or "GET" in rule.methods else sorted(rule.methods)[0]
    path = _concrete_path(spec.paths[0]) if spec.paths else f"/{FILLER}"
    query = {name: _concrete(condition.match) for name, condition in spec.query.items()}
    headers = {name: _concrete(glob) for name, glob in spec.headers.items()}
    tls = SERVER_PORTS[port]
    request = Request(port=port, protocol="https" if tls else "http", host=host, method=method,
                      path=path, query={k: [v] for k, v in query.items()},
                      headers={k: [v] for k, v in headers.items()})
    decision = policy.decide(request)
    if decision.rule != rule.id or not decision.allowed:
        return None, f"the request built for it ({method} {path} on {host}) is not allowed " \
                     f"by it ({decision.reason})"
    if query:
        path += "?" + "&".join(f"{k}={v}" for k, v in query.items())
    return Probe(rule.id, host, port, tls, method, path, headers, _secrets(rule)), ""


def _port(rule: CompiledRule) -> int | None:
    for port in sorted(rule.ports) if rule.ports else [443, 80]:
        tls = SERVER_PORTS.get(port)
        if tls is not None and ("https" if tls else "http") in rule.protocols:
            return port
    return None


def _secrets(rule: CompiledRule) -> tuple[str, ...]:
    names: list[str] = []
    for spec in rule.spec.inject:
        names.append(spec.secret)
        if isinstance(spec, InjectBasic) and spec.username_secret:
            names.append(spec.username_secret)
    return tuple(names)


def _concrete(glob: str) -> str:
    """A value the fnmatch glob matches."""
    text = re.sub(r"\[!?(.)[^\]]*\]", r"\1", glob)   # a class: its first character
    return text.replace("*", "x").replace("?", "x")


def _concrete_path(glob: str) -> str:
    segments = [FILLER if s == "**" else s.replace("*", "x") for s in glob.split("/")]
    return "/".join(segments) or "/"


def _denied_name(policy: CompiledPolicy) -> str | None:
    """A name the policy refuses (or, in monitor mode, would refuse)."""
    for name in DENIED_CANDIDATES:
        if policy.decide_name(name).verdict != Verdict.ALLOW:
            return name
    return None
