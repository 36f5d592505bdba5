"""`sandgate approvals` without a running gateway or with bad input: one line, the fix, a
documented exit status; over TCP, the API's refusal as one line too."""

from __future__ import annotations

import socket

from tests.gateway.cli.conftest import Sandgate
from tests.gateway.cli.test_errors import assert_one_line_error


def test_no_gateway_is_an_environment_error(sandgate: Sandgate) -> None:
    assert_one_line_error(sandgate("approvals", "list"), "no gateway is running",
                          "sandgate serve", code=3)


def test_bad_arguments_are_usage_errors(sandgate: Sandgate) -> None:
    assert_one_line_error(sandgate("approvals", "allow", "seven"), "seven")
    assert_one_line_error(sandgate("approvals", "allow", "7", "--for", "ever"), "ever")
    assert_one_line_error(sandgate("approvals", "revoke", "seven"), "seven")


def test_revoke_needs_a_gateway_too(sandgate: Sandgate) -> None:
    assert_one_line_error(sandgate("approvals", "revoke", "7"), "no gateway is running",
                          "sandgate serve", code=3)


def test_over_tcp_a_token_is_needed(sandgate: Sandgate) -> None:
    assert_one_line_error(sandgate("approvals", "--api", "http://127.0.0.1:9", "list"),
                          "SANDGATE_TOKEN")


def test_an_api_that_does_not_answer_is_an_environment_error(sandgate: Sandgate) -> None:
    with socket.socket() as s:          # a loopback port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = sandgate("approvals", "--api", f"http://127.0.0.1:{port}", "deny", "3",
                      SANDGATE_TOKEN="sgt_x")
    assert_one_line_error(result, "does not answer", code=3)
