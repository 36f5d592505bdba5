"""Loader errors: every problem in one pass, each with its exact FILE:LINE:COL and rule."""

from __future__ import annotations

from pathlib import Path

import pytest

from policies.loader import PolicyError, load_directory, load_file, load_text

TESTDATA = Path(__file__).parent / "testdata"


def errors_of(path: Path) -> list[str]:
    with pytest.raises(PolicyError) as info:
        load_file(path)
    return [str(e).removeprefix(f"{path}:") for e in info.value.errors]


def test_every_problem_reported_with_position_and_rule() -> None:
    assert errors_of(TESTDATA / "bad_everything.yaml") == [
        "1:10: `version` must be 1",
        "3:1: unknown key 'colour'; check its spelling against docs/POLICY.md",
        "6:13: rule wild: hosts: '*' would match every host; list the names you need "
        "(for example *.example.com for any subdomain of example.com)",
        "6:18: rule wild: hosts: 'a.*.example.com': a wildcard may only be a whole leading "
        "label, as in *.example.com",
        "6:37: rule wild: hosts: '192.0.2.1' is an address; put addresses and CIDRs under "
        "`addresses`",
        "6:50: rule wild: hosts: '*.com' would match every name under the top-level domain "
        "'com'; name the domain, for example *.example.com",
        "6:59: rule wild: hosts: empty host; write a name such as example.com",
        "7:13: rule wild: ports: port 0 is out of range 1-65535",
        "7:21: rule wild: ports: port 70000 is out of range 1-65535",
        "10:5: rule typo: unknown key 'hostz'; check its spelling against docs/POLICY.md",
        "11:9: rule wild: duplicate rule id (first used by rule #1)",
    ]


def test_yaml_syntax_error_has_position() -> None:
    (error,) = errors_of(TESTDATA / "bad_yaml.yaml")
    assert error.startswith("6:1: YAML syntax:")


def test_missing_file() -> None:
    assert errors_of(TESTDATA / "nope.yaml") == ["0:0: no such policy file"]


@pytest.mark.parametrize(("text", "message"), [
    ("", "1:1: a policy file must be a YAML mapping with `version`, `name` and `rules`"),
    ("- a\n- b\n", "1:1: a policy file must be a YAML mapping with `version`, `name` and "
                   "`rules`"),
    ("version: 1\n", "1:1: missing required key 'name'"),
    ("version: 1\nname: x\nrules:\n  - hosts: [a.test]\n",
     "4:5: rule #1: missing required key 'id'"),
    ("version: 1\nname: x\nversion: 1\n", "3:1: duplicate key 'version'"),
])
def test_small_documents(text: str, message: str) -> None:
    with pytest.raises(PolicyError) as info:
        load_text(text, "p.yaml")
    assert [str(e) for e in info.value.errors] == [f"p.yaml:{message}"]


def test_yaml_12_booleans_rule_id_no_stays_a_string() -> None:
    policy = load_text("version: 1\nname: x\nrules:\n  - id: no\n    hosts: [a.test]\n", "p")
    assert policy.rules[0].id == "no"


def test_version_is_content_hash() -> None:
    a = load_text("version: 1\nname: x\n", "p")
    b = load_text("version: 1\nname: x\n# comment\n", "p")
    assert a.version != b.version and len(a.version) == 12


def test_rule_level_errors_each_with_exact_position() -> None:
    assert errors_of(TESTDATA / "bad_rules.yaml") == [
        "7:9: rule forms: unknown secret form 'cookie'; use one of bearer, header, basic, "
        "query, body, aws-sigv4, mtls",
        "9:9: rule forms: missing required key 'header'",
        "13:13: rule globs: paths: path 'repos/**' must start with '/'",
        "13:25: rule globs: paths: path '/a/b**': '**' must be a whole segment, as in /a/**/b",
        "13:35: rule globs: paths: path '/a?x=1': match the query with `query`, not in the path",
        "14:15: rule globs: methods: unknown HTTP method 'FETCH'; use one of GET, HEAD, POST, "
        "PUT, PATCH, DELETE, OPTIONS, CONNECT, TRACE",
        "16:17: rule addrs: addresses: '10.0.0.0/33' is not an IP address or CIDR (host names "
        "go under `hosts`)",
        "16:32: rule addrs: addresses: 'example.com' is not an IP address or CIDR (host names "
        "go under `hosts`)",
        "16:47: rule addrs: addresses: '2001:db8::/32': sandboxes speak IPv4 only; IPv6 "
        "addresses cannot match",
        "17:5: rule tcp-with-paths: methods, paths, query, headers, mcp and inject apply to HTTP; "
        "add http or https to `protocols`",
        "21:5: rule deny-inject: a deny rule cannot inject credentials",
        "29:17: rule nothing: protocols: 'gopher': Input should be 'http', 'https', 'tcp' or "
        "'tls'",
        "33:7: rule headers: headers: 'bad header' is not a valid HTTP header name",
    ]


def test_extends_cycle_is_reported_where_it_closes() -> None:
    with pytest.raises(PolicyError) as info:
        load_file(TESTDATA / "extends" / "a.yaml")
    assert [str(e) for e in info.value.errors] == [
        f"{TESTDATA / 'extends' / 'c.yaml'}:3:11: `extends` cycle: a -> b -> c -> a; "
        "remove one link"]


def test_extends_missing_target() -> None:
    assert errors_of(TESTDATA / "extends" / "lonely.yaml") == [
        "3:11: `extends`: no policy named 'nowhere' next to this file"]


def test_extends_composes_in_order_with_qualified_ids() -> None:
    policy = load_file(TESTDATA / "compose" / "team.yaml")
    assert [r.id for r in policy.rules] == ["no-admin", "base/web", "extra/db"]  # base once
    assert [r.origin for r in policy.rules] == ["team", "base", "extra"]
    assert policy.monitor


def test_version_covers_extended_policies(tmp_path: Path) -> None:
    for name in ("team", "base", "extra"):
        (tmp_path / f"{name}.yaml").write_text((TESTDATA / "compose" / f"{name}.yaml").read_text())
    before = load_file(tmp_path / "team.yaml").version
    (tmp_path / "base.yaml").write_text((tmp_path / "base.yaml").read_text() + "# edit\n")
    assert load_file(tmp_path / "team.yaml").version != before


def test_directory_reports_duplicate_names(tmp_path: Path) -> None:
    (tmp_path / "one.yaml").write_text("version: 1\nname: same\n")
    (tmp_path / "two.yaml").write_text("version: 1\nname: same\n")
    policies, errors = load_directory(tmp_path)
    assert list(policies) == []
    assert [str(e) for e in errors] == [
        f"{tmp_path / 'two.yaml'}:2:7: policy name 'same' is already used by "
        f"{tmp_path / 'one.yaml'}"]


def test_shipped_policies_and_examples_are_valid() -> None:
    root = Path(__file__).resolve().parents[2] / "policies"
    for directory in (root, root / "examples"):
        policies, errors = load_directory(directory)
        assert errors == [] and policies
    assert len(load_directory(root / "examples")[0]) >= 8


@pytest.mark.parametrize(("text", "message"), [
    ("version: 1\nname: x\x88\n", "2:8: YAML: character '\\x88' is not allowed in YAML"),
    ("version: 1\nname: \udb79\n", "1:1: not valid UTF-8 text (character 17)"),
])
def test_text_yaml_cannot_read(text: str, message: str) -> None:
    with pytest.raises(PolicyError) as info:
        load_text(text, "p.yaml")
    assert [str(e) for e in info.value.errors] == [f"p.yaml:{message}"]


def test_extends_errors_are_reported_beside_schema_errors(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("version: 1\nname: p\nextends: [missing]\nrules:\n  - id: x\n"
                    "    hostz: [a.test]\n")
    assert errors_of(path) == [
        "6:5: rule x: unknown key 'hostz'; check its spelling against docs/POLICY.md",
        "3:11: `extends`: no policy named 'missing' next to this file",
    ]
