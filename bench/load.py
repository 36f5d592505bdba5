"""wrk, the load generator every throughput and latency benchmark uses."""

from __future__ import annotations

import re
import shutil
import subprocess


def wrk(url: str, seconds: int, connections: int = 4, netns: str | None = None,
        headers: list[str] | tuple[str, ...] = (), threads: int = 1) -> tuple[float, float]:
    """(requests per second, p50 latency in ms) of an HTTP/1.1 GET load (keep-alive unless a
    `Connection: close` header is given)."""
    out = _wrk(url, seconds, connections, netns, headers, threads)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    return rps, _percentile_ms(out, "50%")


def wrk_p99(url: str, seconds: int, netns: str | None = None,
            headers: list[str] | tuple[str, ...] = ()) -> float:
    """p99 latency in ms of one keep-alive connection's requests, one after another;
    infinite when not one request completed in `seconds` (wrk then prints a p99 of 0)."""
    out = _wrk(url, seconds, 1, netns, headers, 1)
    done = re.search(r"(\d+) requests in", out)
    if done is None or int(done.group(1)) == 0:
        return float("inf")
    return _percentile_ms(out, "99%")


def _percentile_ms(out: str, which: str) -> float:
    found = re.search(which + r"\s+([\d.]+)(us|ms|s)", out)
    assert found is not None, out
    return float(found.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[found.group(2)]


def _wrk(url: str, seconds: int, connections: int, netns: str | None,
         headers: list[str] | tuple[str, ...], threads: int) -> str:
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
    sockets = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), "
                        r"timeout (\d+)", out)
    closing = any(h.lower() == "connection: close" for h in headers)
    failed = sockets is not None and (
        sum(map(int, sockets.group(1, 3, 4))) or (int(sockets.group(2)) and not closing))
    if "Non-2xx or 3xx responses" in out or failed:   # reads end at each close: expected
        raise SystemExit(f"wrk saw errors:\n{out}")
    return out
