"""A test run as root lives in a network namespace of its own that stands in for the host:
the topology's routes, the gateways' nftables tables, sandbox links and every server the
tests start exist only there. So a run never touches the real host's routes or ports, and two
runs on one machine (a developer's and a helper's, say) cannot collide. Forwarding is
switched on there by the tests that want the worst case (conftest.ip_forwarding).

Names that are global on the host (namespaces under /run/netns, cgroups) still carry the
run's leased prefix (tests/leases.py)."""

from __future__ import annotations

import atexit
import os
import subprocess


def enter_private_host(prefix: str) -> str:
    """Move this process (and everything it starts from now on) into a new namespace named
    `{prefix}-host`, loopback up. Call before any thread is started: setns is per thread."""
    name = f"{prefix}-host"
    subprocess.run(["ip", "netns", "add", name], check=True)
    atexit.register(subprocess.run, ["ip", "netns", "del", name], check=False,
                    capture_output=True)
    with open(f"/run/netns/{name}") as handle:
        os.setns(handle.fileno(), os.CLONE_NEWNET)
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    return name
