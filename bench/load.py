"""wrk, the load generator every throughput and latency benchmark uses."""

from __future__ import annotations

import re
import shutil
import subprocess


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
