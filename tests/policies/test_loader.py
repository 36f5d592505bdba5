"""Loader errors: every problem in one pass, each with its exact FILE:LINE:COL and rule."""

from __future__ import annotations

from pathlib import Path

import pytest

from policies.loader import PolicyError, load_file, load_text

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
