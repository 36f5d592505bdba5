"""Two proxy workers behind one nftables rule: connections really spread over both, and the
state they share (rate-limit buckets, connection counts, audit chain) stays correct; a killed
worker is replaced."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import time
from pathlib import Path

import pytest

from tests.harness import SANDGATE, Gateway

pytestmark = pytest.mark.integration

HOLD = """
import socket, sys, time
held = [socket.create_connection(('www.upstream.test', 80), timeout=5) for _ in range(16)]
print('holding', flush=True)
sys.stdin.readline()
"""


def workers_of(gateway: Gateway) -> dict[int, int]:
    """Worker index -> pid, for the gateway's own proxy workers."""
    assert gateway.process is not None
    found = {}
    for proc in Path("/proc").iterdir():
        try:
            if not proc.name.isdigit() or \
                    int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1]) \
                    != gateway.process.pid:
                continue
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"gateway.processes.worker" in argv:
            found[int(argv[argv.index(b"gateway.processes.worker") + 1])] = int(proc.name)
    return found


def established_on(port: int) -> int:
    out = subprocess.run(["ss", "-Htn", "state", "established", f"( sport = :{port} )"],
                         capture_output=True, text=True, check=True).stdout
    return len(out.splitlines())


def fetch_statuses(gateway: Gateway, policy: Path, count: int) -> list[str]:
    result = gateway.run(policy, "/bin/sh", "-c",
                         f"for i in $(seq {count}); do curl -sS --max-time 10 -o /dev/null "
                         "-w '%{http_code}\\n' http://www.upstream.test/n; done")
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


def test_connections_spread_over_both_workers(gateway: Gateway) -> None:
    policy = gateway.policy("spread", [{"id": "web", "hosts": ["www.upstream.test"]}])
    holder = subprocess.Popen(
        [*SANDGATE, "run", f"--policy={policy}", "--", "/usr/bin/python3", "-c",
         HOLD], env=gateway.env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "holding"
        counts = [established_on(gateway.transparent_port + i) for i in range(2)]
        assert sum(counts) == 16 and min(counts) > 0, counts
    finally:
        holder.communicate("\n", timeout=60)


def test_a_rate_limit_is_one_bucket_across_workers(gateway: Gateway) -> None:
    policy = gateway.policy("limited", [{"id": "web", "hosts": ["www.upstream.test"],
                                         "limits": {"requests_per_minute": 10}}])
    # each curl is a new connection: the hash sends them to both workers
    statuses = fetch_statuses(gateway, policy, 20)
    assert statuses.count("200") == 10 and statuses.count("429") == 10, statuses


def test_a_killed_worker_is_replaced_and_the_chain_verifies(gateway: Gateway) -> None:
    policy = gateway.policy("replace", [{"id": "web", "hosts": ["www.upstream.test"]}])
    before = workers_of(gateway)
    assert sorted(before) == [0, 1]
    os.kill(before[0], signal.SIGKILL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        now = workers_of(gateway)
        if now.get(0) not in (None, before[0]) and gateway.healthy():
            break
        time.sleep(0.05)
    else:
        pytest.fail(f"worker 0 was not replaced: {gateway.log_tail()}")
    assert workers_of(gateway)[1] == before[1]
    assert fetch_statuses(gateway, policy, 12) == ["200"] * 12
    verify = gateway.sandgate("audit", "verify")
    assert verify.returncode == 0, verify.stdout + verify.stderr


def test_many_connections_to_one_upstream_are_not_serialised(gateway: Gateway) -> None:
    """mitmproxy caps upstream connections per destination at 5 per client connection; each
    sandbox connection is its own client connection, so twelve reach the upstream at once
    (the barrier answers only when all twelve wait there together)."""
    policy = gateway.policy("fanout", [{"id": "web", "hosts": ["www.upstream.test"]}])
    result = gateway.run(policy, "/bin/sh", "-c",
                         "for i in $(seq 12); do curl -sS --max-time 20 -o /dev/null "
                         "-w '%{http_code}\\n' http://www.upstream.test/barrier/12 & done; wait")
    assert result.stdout.split() == ["200"] * 12, result.stdout + result.stderr


def test_an_unprivileged_local_user_cannot_reach_the_hub(gateway: Gateway) -> None:
    """The hub hands out sandbox snapshots (placeholders included) and takes audit rows and
    quarantine orders: only root may connect (socket 0600 in a 0700 data dir)."""
    hub = gateway.home / "hub.sock"
    assert hub.is_socket()
    # the gateway's own guards, not only the test's temporary directory
    assert stat.S_IMODE(hub.stat().st_mode) == 0o600
    assert stat.S_IMODE(gateway.home.stat().st_mode) == 0o700
    attempt = subprocess.run(
        ["runuser", "-u", "nobody", "--", "/usr/bin/python3", "-c",
         "import socket, sys\n"
         "s = socket.socket(socket.AF_UNIX)\n"
         f"s.connect({str(hub)!r})\n"
         "s.sendall(b'{\"op\": \"hello\", \"worker\": 9, \"pid\": 1}\\n')\n"
         "print(s.recv(65536)[:80])"],
        capture_output=True, text=True, timeout=30)
    assert attempt.returncode != 0 and "PermissionError" in attempt.stderr, attempt
