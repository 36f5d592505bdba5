"""The sandbox sees the host's root read-only, but never the gateway's data dir (CA key,
database), other users' homes or credential files."""

from __future__ import annotations

import json
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import force_clean, kill_runsc, new_prefix
from tests.harness import Gateway
from tests.topology import Topology

pytestmark = pytest.mark.integration

PROBE = """
import json, os, sys
out = {}
for path in sys.argv[1:]:
    try:
        with open(path, "rb") as f:
            out[path] = "read %d bytes" % len(f.read())
    except OSError as e:
        out[path] = type(e).__name__
try:
    open("/etc/sandgate-write-test", "w")
    out["write"] = "written"
except OSError as e:
    out["write"] = type(e).__name__
print(json.dumps(out))
"""


@pytest.fixture
def outside_tmp_gateway(topology: Topology) -> Iterator[Gateway]:
    # A data dir outside /tmp (the sandbox's /tmp is its own tmpfs anyway), in a place no
    # built-in mask covers: only the data-dir mask can hide it.
    prefix = new_prefix()
    home = Path(f"/opt/sandgate-test-{prefix}")
    gw = Gateway(prefix, home, topology)
    try:
        gw.start()
        yield gw
    finally:
        gw.stop(signal.SIGKILL)
        kill_runsc(home)
        force_clean(prefix)
        shutil.rmtree(home, ignore_errors=True)


def test_sandbox_cannot_read_gateway_secrets(outside_tmp_gateway: Gateway) -> None:
    gw = outside_tmp_gateway
    ca_key = gw.home / "ca" / "mitmproxy-ca.pem"
    assert ca_key.stat().st_mode & 0o777 == 0o600
    assert gw.home.stat().st_mode & 0o777 == 0o700
    secrets = [str(ca_key), str(gw.home / "sandgate.db"), "/etc/shadow", "/root/.bashrc"]
    result = gw.run(gw.policy("none", []), "/usr/bin/python3", "-c", PROBE, *secrets)
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout)
    assert seen[str(ca_key)] == "FileNotFoundError"
    assert seen[str(gw.home / "sandgate.db")] == "FileNotFoundError"
    assert seen["/etc/shadow"] == "read 0 bytes"
    assert seen["/root/.bashrc"] in ("FileNotFoundError", "PermissionError")
    assert seen["write"] in ("OSError", "PermissionError")  # the root is read-only
