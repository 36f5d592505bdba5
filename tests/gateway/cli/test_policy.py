"""`sandgate policy` commands, run as a user runs them (in-process, see conftest.py)."""

from __future__ import annotations

from pathlib import Path

from tests.gateway.cli.conftest import Sandgate

REPO = Path(__file__).resolve().parents[3]
TESTDATA = REPO / "tests" / "policies" / "testdata"
EXAMPLES = REPO / "policies" / "examples"
AGENT = str(EXAMPLES / "coding-agent.yaml")


def write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def test_check_clean_and_broken(sandgate: Sandgate) -> None:
    ok = sandgate("policy", "check", str(REPO / "policies"), str(EXAMPLES))
    assert ok.returncode == 0 and ok.stdout.startswith("ok: "), ok
    bad = sandgate("policy", "check", str(TESTDATA / "bad_rules.yaml"),
                   str(TESTDATA / "bad_yaml.yaml"))
    assert bad.returncode == 1
    lines = bad.stdout.splitlines()
    assert len(lines) == 14 and all(":" in line for line in lines)
    assert lines[0].startswith(f"{TESTDATA / 'bad_rules.yaml'}:7:9: rule forms:")
    assert bad.stderr.strip() == "2 policies: 14 error(s), 0 warning(s)"


LINTED = """version: 1
name: linted
rules:
  - id: pages
    hosts: ["*.github.io"]
  - id: ports
    hosts: [a.test]
    ports: [443, 443]
"""


def test_check_warns_and_strict_fails(sandgate: Sandgate, tmp_path: Path) -> None:
    path = write(tmp_path / "linted.yaml", LINTED)
    lenient = sandgate("policy", "check", path)
    assert lenient.returncode == 0
    assert lenient.stdout.splitlines() == [
        f"{path}:5:13: rule pages: warning: *.github.io matches every site under the public "
        "suffix github.io, where anyone can register a name; name the site (e.g. "
        "yours.github.io)",
        f"{path}:8:18: rule ports: warning: port 443 is listed twice; remove one",
        "ok: 1 policy: 0 error(s), 2 warning(s)",
    ]
    strict = sandgate("policy", "check", "--strict", path)
    assert strict.returncode == 1
    assert strict.stderr.strip() == "1 policy: 0 error(s), 2 warning(s) (--strict)"


def test_check_of_an_empty_directory_is_no_silent_ok(sandgate: Sandgate, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    result = sandgate("policy", "check", str(empty))
    assert result.stdout.splitlines()[0] == (f"{empty}:0:0: warning: no policy files here "
                                             "(*.yaml, *.yml); check the path")
    assert result.returncode == 0
    assert result.stdout.splitlines()[1] == "ok: 0 policies: 0 error(s), 1 warning(s)"
    assert sandgate("policy", "check", "--strict", str(empty)).returncode == 1


def test_check_refuses_an_alias_bomb_at_once(sandgate: Sandgate, tmp_path: Path) -> None:
    bomb = write(tmp_path / "bomb.yaml", (TESTDATA / "alias_bomb.yaml").read_text())
    result = sandgate("policy", "check", bomb)
    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        f"{bomb}:2:7: YAML anchors (&a) are not allowed in a policy; write each value out"]


def test_test_prints_verdict_rule_reason(sandgate: Sandgate) -> None:
    allowed = sandgate("policy", "test", AGENT, "GET", "https://pypi.org/simple/requests/")
    assert allowed.returncode == 0
    assert allowed.stdout.split()[:3] == ["allow", "rule=pypi/pypi-index",
                                          "reason=allowed_by_rule"]
    push = sandgate("policy", "test", AGENT, "POST", "https://github.com/o/r/git-receive-pack")
    assert push.returncode == 1
    assert push.stdout.split()[:3] == ["deny", "rule=github-git-read/no-push",
                                       "reason=denied_by_rule"]
    gist = sandgate("policy", "test", AGENT, "GET", "https://gist.github.com/")
    assert gist.stdout.split()[:3] == ["deny", "rule=no-gists", "reason=denied_by_rule"]
    other = sandgate("policy", "test", AGENT, "GET", "https://example.com/")
    assert other.stdout.split()[:3] == ["deny", "rule=-", "reason=no_matching_rule"]


def test_test_models_dns_and_names_the_nearest_rules(sandgate: Sandgate) -> None:
    other = sandgate("policy", "test", AGENT, "GET", "https://example.com/")
    assert "  dns: example.com gets NXDOMAIN (no rule names it); the sandbox never connects" \
        in other.stdout.splitlines()
    post = sandgate("policy", "test", str(EXAMPLES / "github-api-readonly.yaml"), "POST",
                    "https://api.github.com/repos/o/r/issues")
    assert post.returncode == 1
    assert post.stdout.splitlines()[1:] == [
        "  dns: api.github.com gets a synthetic address",
        "  path: /repos/o/r/issues (canonical; sent upstream as it is)",
        "  nearest rules:",
        "    graphql: path /repos/o/r/issues matches none of /graphql",
        "    rest-read: method POST not in GET, HEAD",
    ]


HEADERS = """version: 1
name: headers
limits: {request_body_bytes: 1000}
rules:
  - id: json
    hosts: [api.test]
    headers: {content-type: "application/json*"}
  - id: local
    hosts: [lan.test]
    addresses: [10.1.0.0/16]
"""


def test_test_takes_headers_body_size_and_resolved_addresses(sandgate: Sandgate,
                                                             tmp_path: Path) -> None:
    path = write(tmp_path / "headers.yaml", HEADERS)
    without = sandgate("policy", "test", path, "POST", "https://api.test/x")
    assert without.returncode == 1
    assert "    json: header content-type missing (needs 'application/json*')" in without.stdout
    sent = sandgate("policy", "test", path, "POST", "https://api.test/x",
                    "-H", "Content-Type: application/json; charset=utf-8")
    assert sent.returncode == 0 and sent.stdout.startswith("allow  rule=json")
    big = sandgate("policy", "test", path, "POST", "https://api.test/x", "--body-size", "1001",
                   "-H", "content-type:application/json")
    assert big.returncode == 1 and big.stdout.startswith("deny  rule=json  reason=body_too_large")
    private = sandgate("policy", "test", path, "GET", "https://lan.test/", "--resolves-to",
                       "10.1.2.3")
    assert private.returncode == 0
    loopback = sandgate("policy", "test", path, "GET", "https://lan.test/", "--resolves-to",
                        "127.0.0.1")
    assert loopback.returncode == 1
    assert "reason=refused_address" in loopback.stdout
    assert "  upstream: 127.0.0.1 is never dialed (loopback)" in loopback.stdout.splitlines()


def test_test_bad_input_is_one_line(sandgate: Sandgate) -> None:
    pypi = str(EXAMPLES / "pypi.yaml")
    for args, needle in [
        (("GET", "ftp://x/"), "scheme must be http, https, tcp or tls"),
        (("GET", "https://pypi.org:0/"), "port 0 is out of range 1-65535"),
        (("GET", "https://pypi.org/", "-H", "no-colon"), "is not NAME:VALUE"),
        (("GET", "https://pypi.org/", "--resolves-to", "pypi.org"), "is not an IPv4 address"),
    ]:
        result = sandgate("policy", "test", pypi, *args)
        assert result.returncode == 2, (args, result)
        assert len(result.stderr.splitlines()) == 1 and needle in result.stderr, result.stderr


def test_explain_shows_limits_and_resolved_extends(sandgate: Sandgate) -> None:
    explain = sandgate("policy", "explain", AGENT)
    assert explain.returncode == 0
    lines = explain.stdout.splitlines()
    assert lines[1] == ("limits per sandbox: connections 256, request_body_bytes 104857600 "
                        "(defaults)")
    assert lines[2] == ("extends pypi, npm, github-api-readonly, github-git-read, anthropic; "
                        "rules included from: pypi, npm, github-api-readonly, github-git-read, "
                        "anthropic (their own mode and limits do not apply)")
    assert "npm/npm-registry" in explain.stdout and "no-gists" in explain.stdout


def test_diff(sandgate: Sandgate) -> None:
    same = sandgate("policy", "diff", str(EXAMPLES / "npm.yaml"), str(EXAMPLES / "npm.yaml"))
    assert (same.returncode, same.stdout.strip()) == (0, "no change to egress or credentials")
    changed = sandgate("policy", "diff", str(EXAMPLES / "pypi.yaml"), str(EXAMPLES / "npm.yaml"))
    assert changed.returncode == 1
    assert "widens       rule npm-registry: new allow rule for registry.npmjs.org" \
        in changed.stdout.splitlines()
    assert "narrows      rule pypi-index: removed allow rule for pypi.org" \
        in changed.stdout.splitlines()


def test_policy_names_resolve_to_the_packaged_policies(sandgate: Sandgate) -> None:
    result = sandgate("policy", "test", "pypi", "GET", "https://pypi.org/simple/")
    assert result.returncode == 0 and "rule=pypi-index" in result.stdout


def test_status_without_gateway(sandgate: Sandgate) -> None:
    result = sandgate("policy", "status")
    assert result.returncode == 3 and "no gateway is running" in result.stderr
