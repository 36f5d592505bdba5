"""Bulk transfers: MB/s of one download and one upload of SIZE bytes with curl, from a
namespace (the host's for the direct baseline, the bare client's, a sandbox's), and the peak
resident memory a process group added meanwhile (sampled every 20 ms)."""

from __future__ import annotations

import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


def _curl(netns: str, args: list[str]) -> float:
    out = subprocess.run(["nsenter", f"--net=/run/netns/{netns}", "curl", "-sS", "-o",
                          "/dev/null", *args], capture_output=True, text=True, check=True)
    return float(out.stdout)


def download(netns: str, url: str, headers: list[str] = ()) -> float:  # type: ignore[assignment]
    """MB/s (10^6 bytes per second) of GET `url`."""
    flags = [f for h in headers for f in ("-H", h)]
    return _curl(netns, [*flags, "-w", "%{speed_download}", url]) / 1e6


def upload(netns: str, url: str, source: Path,
           headers: list[str] = ()) -> float:  # type: ignore[assignment]
    """MB/s of PUT `source` (its length given) to `url`."""
    flags = [f for h in headers for f in ("-H", h)]
    return _curl(netns, [*flags, "-w", "%{speed_upload}", "-T", str(source), url]) / 1e6


@contextmanager
def payload(size: int) -> Iterator[Path]:
    """A sparse file of `size` zero bytes (costs no disk)."""
    with tempfile.NamedTemporaryFile(prefix="sandgate-bulk-") as handle:
        handle.truncate(size)
        yield Path(handle.name)


def rss_kib(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        total = max(total, int(next(line.split()[1] for line in status.splitlines()
                                    if line.startswith("VmRSS:"))))
    return total


def peak_growth_mib(pids: Callable[[], list[int]],
                    work: Callable[[], float]) -> tuple[float, float]:
    """(what `work` returns, the largest RSS growth of any process in `pids()` meanwhile, MiB)."""
    before = rss_kib(pids())
    peak, done = [before], threading.Event()

    def sample() -> None:
        while not done.wait(0.02):
            peak.append(rss_kib(pids()))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        result = work()
    finally:
        done.set()
        sampler.join()
    return result, (max(peak) - before) / 1024
