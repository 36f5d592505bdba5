"""The MCP guard is loaded on the first flow whose rule has `mcp:`: a proxy worker that never
sees one never imports the MCP SDK's types (a second of CPU at every worker start)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.doubles import Plane
from tests.gateway.dataplane.addons.conftest import Through
from tests.gateway.dataplane.addons.test_mcp_guard import call, make, post


@pytest.fixture
def plane(tmp_path: Path) -> Iterator[Plane]:
    plane = make(tmp_path)
    yield plane
    plane.close()


def test_a_worker_starts_without_the_sdk() -> None:
    code = "import sys, gateway.dataplane.proxy; print('mcp_types' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=Path(__file__).resolve().parents[4])
    assert out.stdout.strip() == "False"


def test_the_guard_comes_with_the_first_mcp_rule(plane: Plane) -> None:
    through = Through(plane)
    plain = post(plane, {"any": "body"}, host="plain.example.test")
    through.request(plain)
    assert through.mcp.guard is None and plain.response is None
    refused = post(plane, call("delete_repo", repo="octo/x"))
    through.request(refused)
    assert through.mcp.guard is not None
    assert refused.response is not None
    assert json.loads(refused.response.content or b"")["error"]["code"] == -32602
