"""Bad input gives one line naming the problem and the fix, exit status 2, no traceback."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]


def sandgate(*args: str, home: Path, env: dict[str, str] | None = None,
             prefix: list[str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "SANDGATE_HOME": str(home), **(env or {})}
    return subprocess.run([*(prefix or []), sys.executable, "-m", "gateway.cli", *args],
                          env=full_env, cwd=REPO, capture_output=True, text=True, timeout=60)


def assert_one_line_error(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("sandgate: error: ")
    for needle in needles:
        assert needle in lines[0]


def test_missing_policy_file(tmp_path: Path) -> None:
    result = sandgate("run", "--policy", str(tmp_path / "nope.yaml"), "--", "true", home=tmp_path)
    assert_one_line_error(result, "nope.yaml does not exist", "--policy")


def test_malformed_policy_file(tmp_path: Path) -> None:
    policy = tmp_path / "bad.yaml"
    policy.write_text("version: 1\nname: bad\nrules:\n  - id: x\n    hostz: [a.test]\n")
    result = sandgate("run", "--policy", str(policy), "--", "true", home=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.splitlines() == [
        f"sandgate: error: {policy}:5:5: rule x: unknown key 'hostz'; check its spelling "
        "against docs/POLICY.md",
        f"sandgate: error: policy {policy} is invalid (fix the lines above)",
    ]


def test_unknown_runtime(tmp_path: Path) -> None:
    result = sandgate("run", "--runtime", "docker", "--policy", "default", "--", "true",
                      home=tmp_path)
    assert_one_line_error(result, "unknown runtime 'docker'", "--runtime gvisor")


def test_no_runsc(tmp_path: Path) -> None:
    bare = tmp_path / "bin"
    bare.mkdir()
    for tool in ("nsenter", "nft", "ip"):  # everything but runsc
        if found := shutil.which(tool):
            (bare / tool).symlink_to(found)
    result = sandgate("run", "--policy", "default", "--", "true", home=tmp_path,
                      env={"PATH": str(bare)})
    assert_one_line_error(result, "runsc not found", "apt-get install runsc")


def test_not_root(tmp_path: Path) -> None:
    # A new user namespace without a mapping: the process's effective uid is the overflow
    # uid (not 0) and it holds no capability on the host, like an ordinary user.
    if shutil.which("unshare") is None:
        pytest.fail("unshare (util-linux) is needed for this test")
    as_root = os.geteuid() == 0    # the unit tests also run as an ordinary user
    result = sandgate("run", "--policy", "default", "--", "true", home=tmp_path,
                      prefix=["unshare", "--user"] if as_root else [])
    assert_one_line_error(result, "must run as root", "sudo")


def test_bad_env_flag(tmp_path: Path) -> None:
    result = sandgate("run", "--policy", "default", "--env", "NOEQUALS", "--", "true",
                      home=tmp_path)
    assert_one_line_error(result, "--env 'NOEQUALS' is not KEY=VALUE")


def test_bad_setting(tmp_path: Path) -> None:
    result = sandgate("run", "--upstream-resolver", "not-an-ip", "--policy", "default", "--",
                      "true", home=tmp_path)
    assert_one_line_error(result, "upstream resolver 'not-an-ip' is not an IP address")


def test_missing_upstream_ca(tmp_path: Path) -> None:
    result = sandgate("run", "--upstream-ca", str(tmp_path / "ca.pem"), "--policy", "default",
                      "--", "true", home=tmp_path)
    assert_one_line_error(result, "ca.pem does not exist")


def test_audit_without_data(tmp_path: Path) -> None:
    assert_one_line_error(sandgate("audit", home=tmp_path / "empty"), "no audit log")


def test_loose_master_key_file_is_refused(tmp_path: Path) -> None:
    key = tmp_path / "master.key"
    key.write_text("A" * 43 + "=\n")
    key.chmod(0o644)
    result = sandgate("secret", "list", home=tmp_path,
                      env={"SANDGATE_MASTER_KEY_FILE": str(key)})
    assert_one_line_error(result, "mode 0644", "chmod 600")


def test_secret_value_never_from_argv(tmp_path: Path) -> None:
    result = sandgate("secret", "set", "TOKEN", "the-value", home=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "the-value" not in result.stderr and "never taken from the command line" in result.stderr


def test_secret_set_reads_stdin(tmp_path: Path) -> None:
    full_env = {**os.environ, "SANDGATE_HOME": str(tmp_path)}
    result = subprocess.run([sys.executable, "-m", "gateway.cli", "secret", "set", "TOKEN"],
                            input="from-stdin\n", env=full_env, cwd=REPO, capture_output=True,
                            text=True, timeout=60)
    assert (result.returncode, result.stdout.strip()) == (0, "stored TOKEN version 1")
    assert (tmp_path / "master.key").stat().st_mode & 0o777 == 0o600
    listing = sandgate("secret", "list", home=tmp_path)
    assert "TOKEN" in listing.stdout and "from-stdin" not in listing.stdout
    removed = sandgate("secret", "rm", "TOKEN", home=tmp_path)
    assert removed.returncode == 0
    assert_one_line_error(sandgate("secret", "rm", "TOKEN", home=tmp_path), "no secret named")
