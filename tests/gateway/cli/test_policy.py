"""`sandgate policy` commands, run as a user runs them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
TESTDATA = REPO / "tests" / "policies" / "testdata"
EXAMPLES = REPO / "policies" / "examples"


def policy(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway.cli", "policy", *args],
                          env={**os.environ, "SANDGATE_HOME": str(home)}, cwd=REPO,
                          capture_output=True, text=True, timeout=60)


def test_check_clean_and_broken(tmp_path: Path) -> None:
    ok = policy("check", str(REPO / "policies"), str(EXAMPLES), home=tmp_path)
    assert ok.returncode == 0 and ok.stdout.startswith("ok: ")
    bad = policy("check", str(TESTDATA / "bad_rules.yaml"), str(TESTDATA / "bad_yaml.yaml"),
                 home=tmp_path)
    assert bad.returncode == 1
    lines = bad.stdout.splitlines()
    assert len(lines) == 14 and all(":" in line for line in lines)
    assert lines[0].startswith(f"{TESTDATA / 'bad_rules.yaml'}:7:9: rule forms:")
    assert bad.stderr.strip() == "14 problem(s) in 2 file(s)"


def test_test_prints_verdict_rule_reason(tmp_path: Path) -> None:
    agent = str(EXAMPLES / "coding-agent.yaml")
    allowed = policy("test", agent, "GET", "https://pypi.org/simple/requests/", home=tmp_path)
    assert allowed.returncode == 0
    assert allowed.stdout.split()[:3] == ["allow", "rule=pypi/pypi-index",
                                          "reason=allowed_by_rule"]
    push = policy("test", agent, "POST", "https://github.com/o/r/git-receive-pack",
                  home=tmp_path)
    assert push.returncode == 1
    assert push.stdout.split()[:3] == ["deny", "rule=github-git-read/no-push",
                                       "reason=denied_by_rule"]
    gist = policy("test", agent, "GET", "https://gist.github.com/", home=tmp_path)
    assert gist.stdout.split()[:3] == ["deny", "rule=no-gists", "reason=denied_by_rule"]
    other = policy("test", agent, "GET", "https://example.com/", home=tmp_path)
    assert other.stdout.split()[:3] == ["deny", "rule=-", "reason=no_matching_rule"]


def test_test_bad_url_is_one_line(tmp_path: Path) -> None:
    result = policy("test", str(EXAMPLES / "pypi.yaml"), "GET", "ftp://x/", home=tmp_path)
    assert result.returncode == 2 and len(result.stderr.splitlines()) == 1
    assert "scheme must be http, https, tcp or tls" in result.stderr


def test_explain_and_diff(tmp_path: Path) -> None:
    explain = policy("explain", str(EXAMPLES / "coding-agent.yaml"), home=tmp_path)
    assert explain.returncode == 0
    assert "extends pypi, npm, github-api-readonly, github-git-read, anthropic" in explain.stdout
    assert "npm/npm-registry" in explain.stdout and "no-gists" in explain.stdout
    same = policy("diff", str(EXAMPLES / "npm.yaml"), str(EXAMPLES / "npm.yaml"), home=tmp_path)
    assert (same.returncode, same.stdout.strip()) == (0, "no change in what is allowed")
    changed = policy("diff", str(EXAMPLES / "pypi.yaml"), str(EXAMPLES / "npm.yaml"),
                     home=tmp_path)
    assert changed.returncode == 1
    assert "+ opens: allow https://registry.npmjs.org:443 GET **" in changed.stdout
    assert "- closes: allow https://pypi.org:443 GET **" in changed.stdout


def test_status_without_gateway(tmp_path: Path) -> None:
    result = policy("status", home=tmp_path)
    assert result.returncode == 2 and "no gateway is running" in result.stderr
