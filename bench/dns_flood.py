"""One sandbox floods the gateway's DNS; does another sandbox notice?

    sudo .venv/bin/python bench/dns_flood.py [--rate 50000] [--seconds 8] [--rounds 3]

In a throw-away world (bench/world.py), a gateway with two sandboxes: the victim runs wrk
(keep-alive HTTP through the gateway, 4 connections) and a loop of DNS lookups; the flooder
sends RATE DNS queries a second from its own namespace (its source address, its nftables
redirect: what any process in the sandbox could do; gVisor's netstack could not send that
many). Quiet and flooded turns alternate (the machine's speed drifts), medians reported.
Then the audit log is read back: the flooder's DNS rows plus its `dropped_by_throttle`
counts, against what the gateway received.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import report
from world import BENCH, PLAIN_PORT, gateway_in, settings_for, world

from gateway.client import Sandbox

POLICY = f"""version: 1
name: flood
rules:
  - id: plain
    hosts: [www.upstream.test]
    ports: [{PLAIN_PORT}]
"""


def wrk_p99(netns: str, seconds: int) -> tuple[float, float]:
    """(requests per second, p99 latency ms) of keep-alive GETs from inside `netns`."""
    binary = shutil.which("wrk")
    assert binary is not None, "wrk not found: apt-get install wrk"
    result = subprocess.run(["nsenter", f"--net=/run/netns/{netns}", binary, "-t1", "-c4",
                          f"-d{seconds}s", "--latency",
                          f"http://www.upstream.test:{PLAIN_PORT}/"],
                         capture_output=True, text=True, check=False)
    if result.returncode:
        raise SystemExit(f"wrk failed: {result.stdout}{result.stderr}")
    out = result.stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    assert p99 is not None and "Non-2xx" not in out, out
    return rps, float(p99.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[p99.group(2)]


def gateway_of(sandbox: Sandbox) -> str:
    return str(ipaddress.IPv4Address(sandbox.info["ip"]) - 1)


def flooding(sandbox: Sandbox, rate: int, seconds: float) -> subprocess.Popen[str]:
    sender = subprocess.Popen(
        ["nsenter", f"--net=/run/netns/{sandbox.info['netns']}", sys.executable,
         str(BENCH / "dns_flood_sender.py"), gateway_of(sandbox), str(rate), str(seconds)],
        stdout=subprocess.PIPE, text=True)
    assert sender.stdout is not None and sender.stdout.readline().strip() == "listening"
    return sender


def dns_p99(sandbox: Sandbox, count: int = 300) -> float:
    """p99 ms of the victim's own lookups (sequential, one UDP socket)."""
    code = f"""
import socket, struct, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(2)
s.connect(({gateway_of(sandbox)!r}, 53))
name = b'\\x03www\\x08upstream\\x04test\\x00'
times = []
for i in range({count}):
    t = time.perf_counter()
    s.send(struct.pack('>HHHHHH', i, 0x0100, 1, 0, 0, 0) + name + b'\\x00\\x01\\x00\\x01')
    try:
        s.recv(512)
    except TimeoutError:
        pass                    # counted as a 2 s lookup
    times.append(time.perf_counter() - t)
times.sort()
print(times[int(len(times) * 0.99) - 1] * 1000)
"""
    out = subprocess.run(["nsenter", f"--net=/run/netns/{sandbox.info['netns']}",
                          sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    return float(out)


def turn(victim: Sandbox, flooder: Sandbox | None, rate: int,
         seconds: int) -> tuple[float, float, float, tuple[int, int]]:
    sender = flooding(flooder, rate, seconds + 3) if flooder else None
    try:
        time.sleep(1.0 if sender else 0)       # the flood under way before measuring
        rps, p99 = wrk_p99(victim.info["netns"], seconds)
        dns = dns_p99(victim)
    finally:
        counts = (0, 0)
        if sender is not None:
            out, _ = sender.communicate(timeout=60)
            counts = tuple(int(x) for x in out.split()[-2:])  # type: ignore[assignment]
    return rps, p99, dns, counts


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rate", type=int, default=50_000)
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sandgate-bench-") as tmp, \
            world(Path(tmp)) as the_world, gateway_in(the_world, workers=1) as client:
        settings = settings_for(the_world, 1)
        client.put_policy("flood", POLICY)
        victim = client.create(policy="flood")
        flooder = client.create(policy="flood")
        quiet: list[tuple[float, float, float]] = []
        flooded: list[tuple[float, float, float]] = []
        sent = answered = 0
        mark = _last_id(client)
        for _ in range(args.rounds):
            quiet.append(turn(victim, None, args.rate, args.seconds)[:3])
            *figures, (s, a) = turn(victim, flooder, args.rate, args.seconds)
            flooded.append(tuple(figures))  # type: ignore[arg-type]
            sent, answered = sent + s, answered + a
        time.sleep(2)     # the last dropped_by_throttle summary
        rows, dropped = _flooder_rows(client, flooder, mark)
        received = _received(settings.dns_port, the_world.host)
        kernel = _nft_dropped(settings.naming.table, the_world.host)
        for name, index in (("rps", 0), ("p99_ms", 1), ("dns_p99_ms", 2)):
            q = statistics.median(t[index] for t in quiet)
            f = statistics.median(t[index] for t in flooded)
            report(f"victim_{name}_quiet", round(q, 2))
            report(f"victim_{name}_flooded", round(f, 2))
            report(f"victim_{name}_ratio", round(f / q, 2))
        report("flood_rate_offered_per_s", args.rate)
        report("flood_sent", sent)
        report("flood_answered", answered)
        report("flood_rows", rows)
        report("flood_dropped_by_throttle", dropped)
        report("flood_rows_plus_dropped_vs_sent", round((rows + dropped) / sent, 3))
        report("flood_dropped_by_nft_meter", kernel)
        report("gateway_udp_receive_errors", received)
        report("accounted_vs_sent", round((rows + dropped + kernel + received) / sent, 3))
        victim.delete()
        flooder.delete()


def _last_id(client: object) -> int:
    rows = list(client.audit(latest="true", limit=1))  # type: ignore[attr-defined]
    return int(rows[-1]["id"]) if rows else 0


def _flooder_rows(client: object, flooder: Sandbox, mark: int) -> tuple[int, int]:
    rows = dropped = 0
    for row in flooder.audit():
        if row["id"] <= mark or row["protocol"] != "dns":
            continue
        if row["reason"] == "dropped_by_throttle":
            dropped += row["dropped"]
        else:
            rows += 1
    return rows, dropped


def _nft_dropped(table: str, host_netns: str) -> int:
    """Packets the per-sandbox DNS meter of the gateway's nftables table dropped."""
    out = subprocess.run(["nsenter", f"--net=/run/netns/{host_netns}", "nft", "-j", "list",
                          "chain", "inet", table, "input"], capture_output=True, text=True,
                         check=True).stdout
    for item in json.loads(out)["nftables"]:
        rule = item.get("rule")
        if rule and rule.get("comment") == "dns-flood":
            return sum(int(e["counter"]["packets"]) for e in rule["expr"] if "counter" in e)
    raise SystemExit("no dns-flood rule in the gateway's table")


def _received(port: int, host_netns: str) -> int:
    """UDP receive-buffer drops in the gateway's namespace (the kernel's, before the
    gateway sees a query)."""
    out = subprocess.run(["nsenter", f"--net=/run/netns/{host_netns}", "cat",
                          "/proc/net/snmp"], capture_output=True, text=True, check=True).stdout
    lines = [line.split() for line in out.splitlines() if line.startswith("Udp:")]
    return int(dict(zip(lines[0], lines[1], strict=True))["RcvbufErrors"])


if __name__ == "__main__":
    socket.setdefaulttimeout(30)
    main()
