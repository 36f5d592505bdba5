"""Density and churn: sandboxes created through the API at a given concurrency, the memory
each one costs the host, and one sandbox's tail latency while its neighbours are busy.

Used by bench/run_all.py; everything runs in its throw-away world (bench/world.py)."""

from __future__ import annotations

import statistics
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from load import wrk_p99

from gateway.client import Client, Sandbox


def create_many(uds: str, count: int, concurrency: int,
                make: Callable[[Client], Sandbox]) -> tuple[list[Sandbox], float]:
    """`count` sandboxes made by `make`, `concurrency` at a time (a client each); (them,
    wall seconds)."""
    clients = [Client(uds=uds) for _ in range(concurrency)]
    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        made = list(pool.map(lambda i: make(clients[i % concurrency]), range(count)))
    return made, time.perf_counter() - start


def delete_all(sandboxes: list[Sandbox], concurrency: int) -> None:
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(lambda s: s.delete(), sandboxes))


def pss_mib(runsc_root: Path) -> float:
    """Proportional memory (shared pages split among their users) of every runsc process
    of one gateway (its sandboxes and their gofers), MiB."""
    marker = f"--root={runsc_root}".encode()
    total = 0
    for proc in Path("/proc").iterdir():
        try:
            if marker not in (proc / "cmdline").read_bytes():
                continue
            rollup = (proc / "smaps_rollup").read_text()
        except OSError:
            continue
        total += sum(int(line.split()[1]) for line in rollup.splitlines()
                     if line.startswith("Pss:"))
    return total / 1024


def busy_p99(victim: Callable[[], float], neighbours: list[list[str]], seconds: int) -> float:
    """The victim's p99 (ms) while every neighbour command runs (each a wrk of its own,
    started just before and given `seconds` + 2 to cover the victim's run)."""
    running = [subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
               for cmd in neighbours]
    try:
        time.sleep(0.5)   # all of them under way
        return victim()
    finally:
        for process in running:
            process.wait(timeout=seconds + 30)


def neighbour_load(sandbox: Sandbox, url: str, headers: list[str], seconds: int) -> list[str]:
    """A wrk of one keep-alive connection from `sandbox`'s namespace, as fast as it goes."""
    cmd = ["nsenter", f"--net=/run/netns/{sandbox.info['netns']}", "wrk", "-t1", "-c1",
           f"-d{seconds}s"]
    for header in headers:
        cmd += ["-H", header]
    return [*cmd, url]


def victim_p99(sandbox: Sandbox, url: str, headers: list[str], seconds: int) -> Callable[
        [], float]:
    return lambda: wrk_p99(url, seconds, netns=str(sandbox.info["netns"]), headers=headers)


def median(values: list[float]) -> float:
    return round(statistics.median(values), 2)


def report_limits(report: Callable[[str, Any], None]) -> None:
    """What bounds the number of sandboxes one host runs (docs/PERFORMANCE.md)."""
    from sandbox_net.addressing import MAX_SLOTS

    report("host_address_slots", MAX_SLOTS)
    available = next(int(line.split()[1]) for line in
                     Path("/proc/meminfo").read_text().splitlines()
                     if line.startswith("MemAvailable:"))
    report("host_mem_available_mib", available // 1024)
