"""schemathesis against the control API's own OpenAPI document: whatever it sends, the
service answers with a 4xx, never a 500."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import killed_after
from tests.harness import Gateway
from tests.topology import Topology

pytestmark = pytest.mark.integration


@pytest.fixture
def fuzz_gateway(tmp_path: Path, topology: Topology) -> Iterator[Gateway]:
    with killed_after(tmp_path / "gw", topology) as gw:
        gw.start()
        yield gw


def test_no_server_errors(fuzz_gateway: Gateway) -> None:
    gw = fuzz_gateway
    token = gw.token("admin", "fuzz")
    gw.policy("fuzz", [])  # one valid policy name, so creation paths run too
    binary = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
    assert binary, "schemathesis is a development dependency: pip install -e '.[dev]'"
    result = subprocess.run(
        [binary, "run", f"{gw.api_url}/openapi.json", "--checks", "not_a_server_error",
         "--header", f"Authorization: Bearer {token}", "--max-examples", "25",
         "--phases", "examples,coverage,fuzzing", "--workers", "2", "--seed", "7",
         "--request-timeout", "60", "--no-color"],
        capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stdout[-4000:]
