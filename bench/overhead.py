"""Gateway overhead: requests per second and median latency for the same upstream, direct
from the host versus from inside a sandbox namespace through the gateway (policy, synthetic
DNS, Host check, audit), measured in one invocation with wrk.

    .venv/bin/python bench/overhead.py [--seconds N] [--connections N]
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess

from common import report, topology_and_gateway

from tests.topology import HTTP_IP


def wrk(url: str, seconds: int, connections: int = 4, netns: str | None = None,
        headers: list[str] | tuple[str, ...] = (), threads: int = 1) -> tuple[float, float]:
    """(requests per second, p50 latency in ms) of an HTTP/1.1 GET load (keep-alive unless a
    `Connection: close` header is given)."""
    binary = shutil.which("wrk")
    if binary is None:
        raise SystemExit("wrk not found: apt-get install wrk (scripts/bootstrap.sh does)")
    cmd = [binary, f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency"]
    for header in headers:
        cmd += ["-H", header]
    cmd.append(url)
    if netns:
        cmd[:0] = ["nsenter", f"--net=/run/netns/{netns}"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = re.search(r"50%\s+([\d.]+)(us|ms|s)", out)
    assert p50 is not None, out
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[p50.group(2)]
    sockets = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), "
                        r"timeout (\d+)", out)
    closing = any(h.lower() == "connection: close" for h in headers)
    failed = sockets is not None and (
        sum(map(int, sockets.group(1, 3, 4))) or (int(sockets.group(2)) and not closing))
    if "Non-2xx or 3xx responses" in out or failed:   # reads end at each close: expected
        raise SystemExit(f"wrk saw errors:\n{out}")
    return rps, float(p50.group(1)) * scale


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=4)
    args = parser.parse_args()
    with topology_and_gateway() as (_topo, gw):
        policy = gw.policy("www", [{"id": "www", "hosts": ["www.upstream.test"], "ports": [80]}])
        with gw.client() as c:
            sandbox = c.post("/v1/sandboxes", json={"policy": str(policy)}).json()
        direct = wrk(f"http://{HTTP_IP}/", args.seconds, args.connections,
                     headers=["Host: www.upstream.test"])
        gated = wrk("http://www.upstream.test/", args.seconds, args.connections,
                    netns=sandbox["netns"])
    report("direct_rps", round(direct[0]))
    report("direct_p50_ms", round(direct[1], 3))
    report("gateway_rps", round(gated[0]))
    report("gateway_p50_ms", round(gated[1], 3))
    report("gateway_vs_direct_rps_ratio", round(gated[0] / direct[0], 3))
    report("gateway_added_p50_ms", round(gated[1] - direct[1], 3))


if __name__ == "__main__":
    main()
