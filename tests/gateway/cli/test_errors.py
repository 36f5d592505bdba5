"""Bad input gives one line naming the problem and the fix, with a documented exit status
(2 usage or input, 1 the answer is no, 3 the environment), and never a traceback."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.gateway.cli.conftest import Result, Sandgate

REPO = Path(__file__).resolve().parents[3]


def assert_one_line_error(result: Result, *needles: str, code: int = 2) -> None:
    assert result.returncode == code, result
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("sandgate: error: ")
    for needle in needles:
        assert needle in lines[0]


# Every subcommand with bad arguments or in a bad environment. Run in-process, so an
# exception escaping the command fails the test with its traceback.
SWEEP: list[tuple[tuple[str, ...], dict[str, str], int]] = [
    (("frobnicate",), {}, 2),
    (("serve", "--port", "abc"), {}, 2),
    (("serve", "--upstream-resolver", "not-an-ip"), {}, 2),
    (("api", "--port", "abc"), {}, 2),
    (("run", "--", "true"), {}, 2),
    (("run", "--policy", "/nonexistent/p.yaml", "--", "true"), {}, 2),
    (("selftest",), {}, 2),
    (("selftest", "--policy", "no-such-policy"), {}, 2),
    (("audit", "--since", "99999999d"), {}, 2),
    (("audit", "--since", "yesterday"), {}, 2),
    (("audit", "--limit", "0"), {}, 2),
    (("audit",), {}, 3),
    (("audit", "tail", "-n", "-1"), {}, 2),
    (("audit", "summary", "--top", "0"), {}, 2),
    (("audit", "export", "--format", "xml"), {}, 2),
    (("audit", "verify", "--public-key", "/nonexistent/k.pub"), {}, 2),
    (("audit", "verify"), {"SANDGATE_AUDIT_SIGNING_KEY_FILE": "/nonexistent/k"}, 3),
    (("audit", "keygen", "/nonexistent/dir/k"), {}, 2),
    (("token", "create", "--role", "god"), {}, 2),
    (("token", "create", "--role", "operator", "--name", "no spaces"), {}, 2),
    (("token", "revoke", "x"), {}, 2),
    (("policy", "check", "/nonexistent"), {}, 2),
    (("policy", "test", "no-such-policy", "GET", "https://a.test/"), {}, 2),
    (("policy", "test", "default", "GET", "ftp://a.test/"), {}, 2),
    (("policy", "test", "default", "GET", "https://a.test/"), {}, 1),
    (("policy", "explain", "/nonexistent.yaml"), {}, 2),
    (("policy", "diff", "default"), {}, 2),
    (("policy", "status"), {}, 3),
    (("secret", "set", "1-bad"), {}, 2),
    (("secret", "rm", "MISSING"), {}, 2),
    (("vault", "rotate-master"), {}, 2),
    (("vault", "frobnicate"), {}, 2),
]


@pytest.mark.parametrize(("args", "env", "code"), SWEEP, ids=[" ".join(a) for a, _, _ in SWEEP])
def test_no_traceback_anywhere(sandgate: Sandgate, args: tuple[str, ...], env: dict[str, str],
                               code: int) -> None:
    result = sandgate(*args, **env)
    assert result.returncode == code, result
    assert "Traceback" not in result.stdout + result.stderr
    if code != 1:
        assert_one_line_error(result, code=code)


def test_a_bug_is_one_line_with_exit_4(sandgate: Sandgate,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    import policies.report

    def broken(*_args: object) -> None:
        raise KeyError("boom")

    monkeypatch.setattr(policies.report, "trial", broken)
    result = sandgate("policy", "test", "default", "GET", "https://a.test/")
    assert_one_line_error(result, "internal error: KeyError", "SANDGATE_DEBUG=1", code=4)


def test_version_and_the_data_directory(sandgate: Sandgate, tmp_path: Path) -> None:
    version = sandgate("--version")
    assert version.returncode == 0 and version.stdout.startswith("sandgate ")
    bare = sandgate()
    assert bare.stdout.splitlines()[-1] == f"data directory: {tmp_path / 'home'} (from " \
                                           "SANDGATE_HOME)"


def test_the_default_data_directory(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from gateway.home import default_home
    from gateway.settings import Settings

    monkeypatch.delenv("SANDGATE_HOME", raising=False)
    monkeypatch.delenv("SANDGATE_POLICY_DIR", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    expected = Path("/var/lib/sandgate") if os.geteuid() == 0 else tmp_path / "xdg" / "sandgate"
    assert default_home() == expected
    settings = Settings()
    assert (settings.home, settings.policy_dir) == (expected, expected / "policies")


def test_token_revoke_never_prints_a_token(sandgate: Sandgate) -> None:
    token = "sgt_abcdefghij_" + "S" * 43
    result = sandgate("token", "revoke", token)
    assert_one_line_error(result, "no token with id 'abcdefghij'")
    assert "S" * 8 not in result.stderr + result.stdout
    mangled = sandgate("token", "revoke", "sgt_" + "S" * 43)
    assert_one_line_error(mangled, "not a token id")
    assert "S" * 8 not in mangled.stderr + mangled.stdout


def test_secret_list_on_a_fresh_home_says_what_to_do(sandgate: Sandgate, tmp_path: Path) -> None:
    result = sandgate("secret", "list")
    assert result.returncode == 0
    assert result.stdout.strip() == (f"no secrets stored in {tmp_path / 'home'} yet; `sandgate "
                                     "secret set NAME` (the value on stdin) creates the vault "
                                     "and its key")


def test_missing_policy_file(sandgate: Sandgate, tmp_path: Path) -> None:
    result = sandgate("run", "--policy", str(tmp_path / "nope.yaml"), "--", "true")
    assert_one_line_error(result, "nope.yaml does not exist", "--policy")


def test_malformed_policy_file(sandgate: Sandgate, tmp_path: Path) -> None:
    policy = tmp_path / "bad.yaml"
    policy.write_text("version: 1\nname: bad\nrules:\n  - id: x\n    hostz: [a.test]\n")
    result = sandgate("run", "--policy", str(policy), "--", "true")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.splitlines() == [
        f"sandgate: error: {policy}:5:5: rule x: unknown key 'hostz'; check its spelling "
        "against docs/POLICY.md",
        f"sandgate: error: policy {policy} is invalid (fix the lines above)",
    ]


def test_unknown_runtime(sandgate: Sandgate) -> None:
    result = sandgate("run", "--runtime", "docker", "--policy", "default", "--", "true")
    assert_one_line_error(result, "unknown runtime 'docker'", "--runtime gvisor")


def test_no_runsc(sandgate: Sandgate, tmp_path: Path) -> None:
    bare = tmp_path / "bin"
    bare.mkdir()
    for tool in ("nsenter", "nft", "ip"):  # everything but runsc
        if found := shutil.which(tool):
            (bare / tool).symlink_to(found)
    result = sandgate("run", "--policy", "default", "--", "true", PATH=str(bare))
    assert_one_line_error(result, "runsc not found", "apt-get install runsc", code=3)


def test_bad_env_flag(sandgate: Sandgate) -> None:
    result = sandgate("run", "--policy", "default", "--env", "NOEQUALS", "--", "true")
    assert_one_line_error(result, "--env 'NOEQUALS' is not KEY=VALUE")


def test_bad_setting(sandgate: Sandgate) -> None:
    result = sandgate("run", "--upstream-resolver", "not-an-ip", "--policy", "default", "--",
                      "true")
    assert_one_line_error(result, "upstream resolver 'not-an-ip' is not an IP address")


def test_missing_upstream_ca(sandgate: Sandgate, tmp_path: Path) -> None:
    result = sandgate("run", "--upstream-ca", str(tmp_path / "ca.pem"), "--policy", "default",
                      "--", "true")
    assert_one_line_error(result, "ca.pem does not exist")


def test_audit_without_data(sandgate: Sandgate) -> None:
    assert_one_line_error(sandgate("audit"), "no audit log", code=3)


def test_loose_master_key_file_is_refused(sandgate: Sandgate, tmp_path: Path) -> None:
    key = tmp_path / "master.key"
    key.write_text("A" * 43 + "=\n")
    key.chmod(0o644)
    result = sandgate("secret", "list", SANDGATE_MASTER_KEY_FILE=str(key))
    assert_one_line_error(result, "mode 0644", "chmod 600")


def test_secret_value_never_from_argv(sandgate: Sandgate) -> None:
    result = sandgate("secret", "set", "TOKEN", "the-value")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "the-value" not in result.stderr and "never taken from the command line" in result.stderr


def test_secret_set_reads_stdin(sandgate: Sandgate, tmp_path: Path,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("from-stdin\n"))
    result = sandgate("secret", "set", "TOKEN")
    assert (result.returncode, result.stdout.strip()) == (0, "stored TOKEN version 1")
    assert (tmp_path / "home" / "master.key").stat().st_mode & 0o777 == 0o600
    listing = sandgate("secret", "list")
    assert "TOKEN" in listing.stdout and "from-stdin" not in listing.stdout
    assert sandgate("secret", "rm", "TOKEN").returncode == 0
    assert_one_line_error(sandgate("secret", "rm", "TOKEN"), "no secret named")


# Without privilege: in a new user namespace without a mapping the process holds no
# capability on the host, so file modes bind it (root's or not), and its uid is not 0.
def as_nobody(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    if shutil.which("unshare") is None:
        pytest.fail("unshare (util-linux) is needed for this test")
    env = {**os.environ, "SANDGATE_HOME": str(home)}
    env.pop("SANDGATE_POLICY_DIR", None)
    return subprocess.run(["unshare", "--user", sys.executable, "-m", "gateway.cli", *args],
                          env=env, cwd=REPO, capture_output=True, text=True, timeout=60)


def assert_environment_error(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert_one_line_error(Result(result.returncode, result.stdout, result.stderr), *needles,
                          code=3)


def test_other_users_and_permissions(tmp_path: Path) -> None:
    read_only = tmp_path / "read-only"
    read_only.mkdir()
    closed = tmp_path / "closed"
    closed.mkdir()
    (closed / "p.yaml").write_text("version: 1\nname: p\n")
    read_only.chmod(0o555)
    closed.chmod(0)
    try:
        assert_environment_error(as_nobody("token", "create", "--role", "operator",
                                           home=read_only), f"{read_only} is not writable")
        assert_environment_error(as_nobody("secret", "set", "X", home=read_only),
                                 f"{read_only} is not writable")
        assert_environment_error(as_nobody("policy", "check", str(closed), home=read_only),
                                 f"cannot read directory {closed}")
        assert_environment_error(as_nobody("run", "--policy", "default", "--", "true",
                                           home=read_only), "must run as root", "sudo")
    finally:
        read_only.chmod(0o755)
        closed.chmod(0o755)
