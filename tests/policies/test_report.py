"""`policy test`'s whole answer (DNS, decision, address and size checks, nearest rules) and
`explain`, as pure functions."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from policies.loader import load_file, load_text
from policies.report import explain_header, explain_rows, parse_header, request_from_url, trial

TESTDATA = Path(__file__).parent / "testdata"


@pytest.mark.parametrize(("method", "url", "expected"), [
    ("get", "https://API.test/a/b?x=1&x=2", ("https", "api.test", None, 443, "GET", "/a/b",
                                            {"x": ["1", "2"]})),
    ("GET", "http://api.test:8080", ("http", "api.test", None, 8080, "GET", "/", {})),
    ("-", "tcp://db.test:5432", ("tcp", "db.test", None, 5432, None, None, {})),
    ("GET", "http://203.0.113.7/", ("http", None, "203.0.113.7", 80, "GET", "/", {})),
])
def test_request_from_url(method: str, url: str, expected: tuple[object, ...]) -> None:
    r = request_from_url(method, url)
    address = str(r.address) if r.address else None
    assert (r.protocol, r.host, address, r.port, r.method, r.path, dict(r.query)) == expected
    if address:
        assert isinstance(r.address, ipaddress.IPv4Address)


@pytest.mark.parametrize(("url", "message"), [
    ("ftp://x.test/", "scheme must be http, https, tcp or tls"),
    ("tcp://db.test", "tcp needs a port"),
    ("https:///path", "names no host"),
    ("https://pypi.org:0/", "port 0 is out of range 1-65535"),
    ("https://pypi.org:99999/", "invalid port"),
])
def test_bad_urls(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        request_from_url("GET", url)


def test_headers() -> None:
    assert parse_header("Accept: application/json ") == ("accept", "application/json")
    assert request_from_url("GET", "https://a.test/", {"Accept": "x"}).headers == \
        {"accept": ["x"]}
    repeated = request_from_url("GET", "https://a.test/", [("Accept", "x"), ("accept", "y")])
    assert repeated.headers == {"accept": ["x", "y"]}
    with pytest.raises(ValueError, match="headers belong to HTTP"):
        request_from_url("-", "tcp://a.test:22", {"accept": "x"})


POLICY = load_text("""version: 1
name: api
limits: {request_body_bytes: 10}
rules:
  - id: rest-read
    hosts: [api.test]
    ports: [443]
    methods: [GET, HEAD]
  - id: search
    hosts: [api.test]
    methods: [POST]
    paths: ["/search"]
    query: {q: {match: "*", exactly_one: true}}
  - id: hooks
    hosts: [api.test]
    methods: [POST]
    paths: ["/hooks/*"]
    headers: {x-kind: "push"}
  - id: lan
    hosts: [printer.lan.test]
    addresses: [10.9.0.0/16]
  - id: literal
    addresses: [127.0.0.1, 203.0.113.7]
    protocols: [tcp]
  - id: docs
    hosts: ["*.docs.test"]
""", "api.yaml")


def test_a_denial_names_the_nearest_rules_and_what_each_missed() -> None:
    result = trial(POLICY, request_from_url("POST", "https://api.test/repos?q=a&q=b"))
    assert result.decision.verdict == "deny"
    assert result.nearest == [
        "search: path /repos matches none of /search",
        "hooks: path /repos matches none of /hooks/*",
        "rest-read: method POST not in GET, HEAD",
    ]
    repeated = trial(POLICY, request_from_url("POST", "https://api.test/search?q=a&q=b"))
    assert repeated.nearest[0] == "search: query parameter q appears 2 times (exactly_one)"
    header = trial(POLICY, request_from_url("POST", "https://api.test/hooks/1",
                                            {"x-kind": "pull"}))
    assert header.nearest[0] == "hooks: header x-kind: 'pull' does not match 'push'"
    port = trial(POLICY, request_from_url("GET", "http://api.test:8080/"))
    assert "rest-read: port 8080 not in 443" in port.nearest


def test_dns_is_modelled() -> None:
    unknown = trial(POLICY, request_from_url("GET", "https://docs.test/"))
    assert unknown.decision.verdict == "deny"
    assert unknown.steps == ["dns: docs.test gets NXDOMAIN (no rule names it); the sandbox "
                             "never connects"]
    assert unknown.nearest == ["docs: host docs.test does not match *.docs.test"]
    known = trial(POLICY, request_from_url("GET", "https://a.docs.test/"))
    assert known.decision.verdict == "allow"
    assert known.steps[0] == "dns: a.docs.test gets a synthetic address"


def test_never_dialable_addresses_are_refused_whatever_the_rule_says() -> None:
    loopback = trial(POLICY, request_from_url("-", "tcp://127.0.0.1:22"))
    assert (loopback.decision.verdict, loopback.decision.reason) == ("deny", "refused_address")
    assert loopback.steps[-1] == "upstream: 127.0.0.1 is never dialed (loopback)"
    public = trial(POLICY, request_from_url("-", "tcp://203.0.113.7:22"))
    assert public.decision.verdict == "allow"
    request = request_from_url("GET", "https://printer.lan.test/")
    assert trial(POLICY, request, resolves_to=ipaddress.IPv4Address("10.9.1.1")).decision \
        .verdict == "allow"
    elsewhere = trial(POLICY, request, resolves_to=ipaddress.IPv4Address("10.8.1.1"))
    assert (elsewhere.decision.reason, elsewhere.steps[-1]) == \
        ("refused_address", "upstream: 10.8.1.1 is never dialed (private)")


def test_body_size() -> None:
    request = request_from_url("GET", "https://api.test/")
    assert trial(POLICY, request, body_size=10).decision.verdict == "allow"
    big = trial(POLICY, request, body_size=11)
    assert (big.decision.verdict, big.decision.reason) == ("deny", "body_too_large")


def test_explain_resolves_extends() -> None:
    policy = load_file(TESTDATA / "compose" / "team.yaml")
    rows = explain_rows(policy)
    assert [(r["rule"], r["action"], r["destinations"], r["ports"], r["from"]) for r in rows] == [
        ("no-admin", "deny", "admin.web.test", "*", "team"),
        ("base/web", "allow", "*.web.test", "443", "base"),
        ("extra/db", "allow", "db.test", "5432", "extra"),
    ]
    assert explain_header(policy)[1:] == [
        "limits per sandbox: connections 256, request_body_bytes 104857600 (defaults)",
        "extends base, extra; rules included from: base, extra (their own mode and limits do "
        "not apply)",
    ]


def test_explain_shows_policy_limits() -> None:
    assert explain_header(POLICY)[1] == ("limits per sandbox: connections 256, "
                                         "request_body_bytes 10")


def test_explain_shows_budgets() -> None:
    policy = load_text("version: 1\nname: b\nbudget: {requests: 5, per: 1d}\nrules:\n"
                       "  - {id: up, hosts: [up.test], budget: {bytes_up: 1MiB, per: 1h}}\n",
                       "b.yaml")
    assert explain_header(policy)[2] == "budget per sandbox: requests=5 per 1d"
    assert explain_rows(policy)[0]["also"] == "budget bytes_up=1048576 per 1h"
