"""`sandgate mcp`'s own rules (the tools themselves are driven end to end in
tests/integration/test_agent_mcp.py): paths stay under the work directory, tokens come from
the caller's Authorization header."""

from __future__ import annotations

import pytest
from mcp.server.mcpserver.exceptions import ToolError

from gateway.agent_mcp import WORK_DIR, Access, bearer, work_path


@pytest.mark.parametrize(("path", "expected"), [
    ("notes.txt", f"{WORK_DIR}/notes.txt"), ("a/../b", f"{WORK_DIR}/b"), (".", WORK_DIR),
    (f"{WORK_DIR}/x", f"{WORK_DIR}/x"),
])
def test_paths_under_the_work_directory(path: str, expected: str) -> None:
    assert work_path(path) == expected


@pytest.mark.parametrize("path", ["../etc/passwd", "/etc/passwd", f"{WORK_DIR}x/y",
                                  "a/../../b"])
def test_paths_outside_are_refused(path: str) -> None:
    with pytest.raises(ToolError, match="outside the work directory"):
        work_path(path)


@pytest.mark.parametrize(("header", "token"), [
    ("Bearer sgt_abc", "sgt_abc"), ("bearer  sgt_abc ", "sgt_abc"), ("Basic x", None),
    ("Bearer ", None), ("", None),
])
def test_bearer(header: str, token: str | None) -> None:
    assert bearer({"authorization": header}) == token


def test_per_request_access_needs_a_token() -> None:
    with pytest.raises(ToolError, match="no bearer token"):
        Access(url="http://127.0.0.1:9", per_request=True).client({})
