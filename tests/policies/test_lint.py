"""`sandgate policy check` warnings: each one, where it points, and what --strict does with
it (tests/gateway/cli/test_policy.py runs the command)."""

from __future__ import annotations

from pathlib import Path

import pytest

from policies.lint import check


def warnings_of(tmp_path: Path, rules: str) -> list[str]:
    path = tmp_path / "p.yaml"
    path.write_text(f"version: 1\nname: p\nrules:\n{rules}")
    report = check([path])
    assert report.errors == []
    return [str(w).removeprefix(f"{path}:") for w in report.warnings]


@pytest.mark.parametrize(("rules", "expected"), [
    ("  - id: uk\n    hosts: ['*.co.uk', '.s3.amazonaws.com', 'example.co.uk']\n", [
        "5:13: rule uk: warning: *.co.uk matches every site under the public suffix co.uk, "
        "where anyone can register a name; name the site (e.g. yours.co.uk)",
        "5:24: rule uk: warning: .s3.amazonaws.com matches every site under the public suffix "
        "s3.amazonaws.com, where anyone can register a name; name the site (e.g. "
        "yours.s3.amazonaws.com)",
    ]),
    ("  - id: lo\n"
     "    addresses: [127.0.0.1, 0.0.0.0/0, 198.18.0.0/16, 10.0.0.0/8, 10.1.0.0/16]\n", [
        "5:17: rule lo: warning: 127.0.0.1/32 is never dialable (loopback): the gateway "
        "refuses it whatever a rule says; remove it",
        "5:28: rule lo: warning: 0.0.0.0/0 is too broad (4294967296 addresses, wider than a "
        "/16); list the networks you need",
        "5:39: rule lo: warning: 198.18.0.0/16 is never dialable (synthetic): the gateway "
        "refuses it whatever a rule says; remove it",
        "5:54: rule lo: warning: 10.0.0.0/8 is too broad (16777216 addresses, wider than a /16); "
        "list the networks you need",
    ]),
    ("  - id: twice\n    hosts: [a.test, a.test]\n    ports: [443, 80, 443]\n", [
        "5:21: rule twice: warning: host a.test is listed twice; remove one",
        "6:22: rule twice: warning: port 443 is listed twice; remove one",
    ]),
    ("  - id: allow\n    hosts: [api.test]\n    methods: [GET]\n    paths: ['/v1/**']\n"
     "  - id: no\n    action: deny\n    hosts: ['.api.test']\n    paths: ['/**']\n", [
         "4:5: rule allow: warning: unreachable: deny rule no denies every request it allows; "
         "remove it or narrow the deny",
     ]),
    ("  - id: first\n    hosts: ['*.a.test']\n  - id: second\n    hosts: ['*.a.test']\n"
     "    methods: [GET]\n", [
         "6:5: rule second: warning: shadowed: rule first comes first, is as specific and "
         "matches every request it does; remove one of them",
     ]),
    ("  - id: feed\n    hosts: [feed.test]\n    ports: [443]\n    protocols: [tls]\n"
     "  - id: feed-api\n    hosts: [feed.test]\n    paths: ['/api/**']\n", [
         "4:5: rule feed: warning: tls streams to feed.test:443 are refused "
         "(protocol_mismatch): another rule for that host and port has HTTP conditions; give "
         "the stream its own port, or drop the conditions",
     ]),
    ("  - id: clean\n    hosts: [pypi.org, '*.github.test']\n    addresses: [10.1.0.0/16]\n"
     "    ports: [443]\n", []),
])
def test_each_warning(tmp_path: Path, rules: str, expected: list[str]) -> None:
    assert warnings_of(tmp_path, rules) == expected


def test_a_narrower_deny_leaves_the_allow_reachable(tmp_path: Path) -> None:
    rules = ("  - id: allow\n    hosts: [api.test]\n  - id: no\n    action: deny\n"
             "    hosts: [api.test]\n    paths: ['/admin/**']\n")
    assert warnings_of(tmp_path, rules) == []


def test_an_empty_directory_is_a_warning(tmp_path: Path) -> None:
    report = check([tmp_path])
    assert report.checked == 0 and report.errors == []
    assert [str(w) for w in report.warnings] == [
        f"{tmp_path}:0:0: warning: no policy files here (*.yaml, *.yml); check the path"]


def test_non_integer_ports_are_errors(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("version: 1\nname: p\nrules:\n  - id: x\n    hosts: [a.test]\n"
                    "    ports: [true, 443.0, '22']\n")
    assert [str(e).removeprefix(f"{path}:") for e in check([path]).errors] == [
        "6:13: rule x: ports: port true is not a whole number; write it as 443",
        "6:19: rule x: ports: port 443.0 is not a whole number; write it as 443",
        "6:26: rule x: ports: port '22' is not a whole number; write it as 443",
    ]
