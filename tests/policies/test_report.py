from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from policies.loader import load_file, load_text
from policies.report import diff, explain_rows, request_from_url

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
])
def test_bad_urls(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        request_from_url("GET", url)


def test_explain_resolves_extends() -> None:
    rows = explain_rows(load_file(TESTDATA / "compose" / "team.yaml"))
    assert [(r["rule"], r["action"], r["destinations"], r["ports"], r["from"]) for r in rows] == [
        ("no-admin", "deny", "admin.web.test", "*", "team"),
        ("base/web", "allow", "*.web.test", "443", "base"),
        ("extra/db", "allow", "db.test", "5432", "extra"),
    ]


def test_diff_names_what_opens_and_closes() -> None:
    old = load_text("version: 1\nname: p\nrules:\n  - id: a\n    hosts: [a.test]\n"
                    "    ports: [443]\n    methods: [GET]\n", "old")
    new = load_text("version: 1\nname: p\nmode: monitor\nrules:\n  - id: a\n    hosts: [a.test]\n"
                    "    ports: [443]\n    methods: [GET, POST]\n  - id: no\n    action: deny\n"
                    "    hosts: [b.test]\n", "new")
    assert diff(old, new) == [
        "+ opens: allow http://a.test:443 POST **",
        "+ opens: allow https://a.test:443 POST **",
        "+ closes (new deny): deny http://b.test:*",
        "+ closes (new deny): deny https://b.test:*",
        "+ closes (new deny): deny tls://b.test:*",
        "~ mode: enforce -> monitor",
    ]
    assert diff(old, old) == []
