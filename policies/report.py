"""Reviewing policies: what a policy allows (explain), what a change opens or closes (diff),
and the question `sandgate policy test` asks. Pure functions over compiled policies."""

from __future__ import annotations

import ipaddress
import urllib.parse
from dataclasses import dataclass

from policies.hosts import HostError, normalise_name
from policies.matcher import CompiledPolicy, CompiledRule, Request

DEFAULT_PORTS = {"http": 80, "https": 443}


def request_from_url(method: str, url: str) -> Request:
    """The request `METHOD URL` would make. Schemes: http, https, tcp, tls (tcp://host:port).
    Raises ValueError with what to write instead."""
    parsed = urllib.parse.urlsplit(url)
    scheme = parsed.scheme.lower()
    if scheme not in ("http", "https", "tcp", "tls"):
        raise ValueError(f"URL {url!r}: scheme must be http, https, tcp or tls")
    if not parsed.hostname:
        raise ValueError(f"URL {url!r} names no host")
    try:
        port = parsed.port or DEFAULT_PORTS.get(scheme)
    except ValueError:
        raise ValueError(f"URL {url!r} has an invalid port") from None
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
    query: dict[str, list[str]] = {}
    for key, value in urllib.parse.parse_qsl(parsed.query, keep_blank_values=True):
        query.setdefault(key, []).append(value)
    return Request(port=port, protocol=scheme, host=host, address=address,
                   method=method.upper() if http else None,
                   path=(parsed.path or "/") if http else None, query=query)


def _join(values: object) -> str:
    items = [str(v) for v in values]  # type: ignore[attr-defined]
    return ",".join(items) if items else "*"


def explain_rows(policy: CompiledPolicy) -> list[dict[str, str]]:
    """One row per rule, in decision order, with its origin through `extends`."""
    rows = []
    for rule in policy.rules:
        s = rule.spec
        extra = []
        if s.query:
            extra.append("query " + " ".join(f"{k}={v}" for k, v in s.query.items()))
        if s.headers:
            extra.append("headers " + " ".join(f"{k}={v}" for k, v in s.headers.items()))
        if s.limits:
            limits = s.limits.model_dump(exclude_none=True)
            extra.append("limits " + " ".join(f"{k}={v}" for k, v in limits.items()))
        if s.inject:
            extra.append("inject " + " ".join(f"{i.secret}:{i.form}" for i in s.inject))
        rows.append({
            "rule": rule.id, "action": s.action,
            "destinations": _join([*s.hosts, *s.addresses]),
            "ports": _join(s.ports), "protocols": ",".join(sorted(rule.protocols)),
            "methods": _join(s.methods), "paths": _join(s.paths) if s.paths else "**",
            "also": "; ".join(extra), "from": rule.origin,
        })
    return rows


@dataclass(frozen=True, order=True, slots=True)
class Atom:
    """One (destination, port, protocol, method, path) a rule speaks for."""

    action: str
    destination: str
    port: str
    protocol: str
    method: str
    path: str
    conditions: str

    def __str__(self) -> str:
        where = f"{self.protocol}://{self.destination}:{self.port}"
        what = f"{self.method} {self.path}" if self.method != "*" or self.path != "**" else ""
        cond = f" if {self.conditions}" if self.conditions else ""
        return f"{self.action} {where} {what}".rstrip() + cond


def _atoms(rule: CompiledRule) -> set[Atom]:
    s = rule.spec
    conditions = " ".join([*(f"query.{k}={v}" for k, v in sorted(s.query.items())),
                           *(f"header.{k}={v}" for k, v in sorted(s.headers.items()))])
    return {
        Atom(s.action, dest, port, proto, method, path, conditions)
        for dest in [*s.hosts, *s.addresses]
        for port in ([str(p) for p in s.ports] or ["*"])
        for proto in sorted(rule.protocols)
        for method in (s.methods or ["*"])
        for path in (s.paths or ["**"])
    }


def diff(old: CompiledPolicy, new: CompiledPolicy) -> list[str]:
    """Lines saying what the change from `old` to `new` opens (+) and closes (-)."""
    def atoms(policy: CompiledPolicy) -> set[Atom]:
        return set().union(*(_atoms(r) for r in policy.rules)) if policy.rules else set()

    before, after = atoms(old), atoms(new)
    lines = []
    for atom in sorted(after - before):
        verb = "opens" if atom.action == "allow" else "closes (new deny)"
        lines.append(f"+ {verb}: {atom}")
    for atom in sorted(before - after):
        verb = "closes" if atom.action == "allow" else "opens (deny removed)"
        lines.append(f"- {verb}: {atom}")
    if old.spec.mode != new.spec.mode:
        lines.append(f"~ mode: {old.spec.mode} -> {new.spec.mode}")
    return lines
