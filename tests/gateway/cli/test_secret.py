"""`sandgate secret set --provider`: plain fields on the command line, secret ones only from
files or stdin; a configuration that cannot work is one line naming the fix; `secret list`
shows each provider's state and never a value."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest

from tests.gateway.cli.conftest import Sandgate
from tests.gateway.cli.test_errors import assert_one_line_error

URL = "--field=token_url=https://auth.example.test/oauth/token"
SECRET = "client-secret-value-0123"


@pytest.mark.parametrize(("args", "needles"), [
    (("--provider", "oauth3"), ("unknown provider 'oauth3'",)),
    (("--provider", "oauth2_client_credentials", URL, "--field=client_id=c",
      f"--field=client_secret={SECRET}"), ("client_secret is secret", "--file client_secret")),
    ((URL,), ("--field and --file configure a provider", "--provider")),
    (("--provider", "oauth2_client_credentials", URL, "--field=client_id=c",
      "--file=client_secret=/nonexistent/s"), ("cannot read /nonexistent/s",)),
    (("--provider", "oauth2_client_credentials", URL), ("needs client_id, client_secret",)),
    (("--provider", "oauth2_client_credentials", "--field", "token_url"),
     ("write it as --field NAME=VALUE",)),
])
def test_bad_provider_settings_are_one_line(sandgate: Sandgate, args: tuple[str, ...],
                                            needles: tuple[str, ...]) -> None:
    result = sandgate("secret", "set", "API", *args)
    assert_one_line_error(result, *needles)
    assert SECRET not in result.stderr


def test_a_provider_from_a_file_and_stdin_listed_without_values(
        sandgate: Sandgate, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret_file = tmp_path / "secret.txt"
    secret_file.write_text(SECRET + "\n")
    result = sandgate("secret", "set", "API", "--provider", "oauth2_client_credentials", URL,
                      "--field=client_id=agents", f"--file=client_secret={secret_file}")
    assert result.stdout.strip() == "stored API version 1 (oauth2_client_credentials)"
    monkeypatch.setattr(sys, "stdin", io.StringIO("rt-from-stdin-0123"))
    result = sandgate("secret", "set", "CRM", "--provider", "oauth2_refresh_token", URL,
                      "--field=client_id=agents", "--file=refresh_token=-")
    assert result.returncode == 0, result.stderr
    listing = sandgate("secret", "list").stdout
    header, *rows = listing.splitlines()
    assert header.split()[:8] == ["NAME", "VERSION", "PROVIDER", "UPDATED", "LAST_USED",
                                  "LAST_REFRESH", "EXPIRES", "ERROR"]
    assert [r.split()[:3] for r in rows] == [["API", "1", "oauth2_client_credentials"],
                                             ["CRM", "1", "oauth2_refresh_token"]]
    assert SECRET not in listing and "rt-from-stdin" not in listing


def test_secret_namespaces_sets_and_lists_the_kubernetes_allow_list(
        sandgate: Sandgate, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("value-0123"))
    assert sandgate("secret", "set", "API").returncode == 0
    result = sandgate("secret", "namespaces", "API", "team-b", "team-a")
    assert result.stdout.strip() == "pods of team-a, team-b may bind API"
    header, row = sandgate("secret", "list").stdout.splitlines()
    assert header.split()[-1] == "K8S_NAMESPACES" and row.split()[-1] == "team-a,team-b"
    assert sandgate("secret", "namespaces", "API").stdout.strip() == "no pod may bind API"
    assert sandgate("secret", "list").stdout.splitlines()[1].split()[-1] == "-"
    assert_one_line_error(sandgate("secret", "namespaces", "API", "Team_A"),
                          "'Team_A' is not a Kubernetes namespace name")
    assert_one_line_error(sandgate("secret", "namespaces", "NOPE", "team-a"),
                          "no secret named 'NOPE'")
