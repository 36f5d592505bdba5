"""Leftovers of a dead test run are swept; those of a live run are not."""

from __future__ import annotations

import subprocess
import sys

from tests import leases
from tests.conftest import force_clean, leftovers

RUN = """
import subprocess, sys
from tests import leases
prefix = leases.lease_prefix()
subprocess.run(["ip", "netns", "add", f"{prefix}-inet"], check=True)
print(prefix, flush=True)
sys.stdin.readline()
"""


def start_run() -> tuple[subprocess.Popen[str], str]:
    run = subprocess.Popen([sys.executable, "-c", RUN], stdin=subprocess.PIPE,
                           stdout=subprocess.PIPE, text=True)
    assert run.stdout is not None
    return run, run.stdout.readline().strip()


def test_only_dead_runs_are_swept(require_root: None) -> None:
    live, live_prefix = start_run()
    dead, dead_prefix = start_run()
    dead.kill()
    dead.communicate()
    try:
        assert leftovers(dead_prefix) == [f"netns {dead_prefix}-inet"]
        swept = leases.sweep_dead_runs(force_clean)
        assert dead_prefix in swept
        assert leftovers(dead_prefix) == []
        assert not (leases.LEASES / f"{dead_prefix}.lock").exists()
        assert live_prefix not in swept
        assert leftovers(live_prefix) == [f"netns {live_prefix}-inet"]
    finally:
        live.communicate("\n")
        force_clean(live_prefix)
        force_clean(dead_prefix)
    assert not (leases.LEASES / f"{live_prefix}.lock").exists()   # removed at a normal exit
