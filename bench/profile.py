"""Where the full path spends its time: py-spy samples the proxy worker (workers=1) while
wrk drives keep-alive HTTP with credential injection through it from a sandbox, then
prints the functions with the most samples, own and inclusive.

    .venv/bin/python bench/profile.py [--seconds N] [--top N]
"""

from __future__ import annotations

import argparse
import collections
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from load import wrk
from run_all import bench_sandbox
from world import PLAIN_PORT, gateway_in, world


def worker_pid(home: Path) -> int:
    """The gateway's (only) proxy worker."""
    main = (home / "gateway.lock").read_text().strip()
    for proc in Path("/proc").iterdir():
        try:
            stat = (proc / "stat").read_text()
            argv = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if stat.rsplit(")", 1)[1].split()[1] == main and b"gateway.processes.worker" in argv:
            return int(proc.name)
    raise SystemExit("no proxy worker found")


def collapse(raw: Path) -> tuple[collections.Counter[str], collections.Counter[str], int]:
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = [f.split(" (")[0] + " (" + f.split(" (")[1].split(":")[0].rsplit("/", 1)[-1]
                  if " (" in f else f for f in stack.split(";")]
        n = int(count)
        total += n
        own[frames[-1]] += n
        for frame in set(frames):
            inclusive[frame] += n
    return own, inclusive, total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--raw", help="keep the raw py-spy samples in this file")
    args = parser.parse_args()
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    with tempfile.TemporaryDirectory(prefix="sandgate-profile-") as tmp, \
            world(Path(tmp)) as w, gateway_in(w, workers=1) as client:
        sandbox, placeholder = bench_sandbox(client)
        raw = Path(args.raw or Path(tmp) / "profile.txt")
        pid = worker_pid(w.workdir / "gateway-0")
        recorder = threading.Thread(target=subprocess.run, args=([
            spy, "record", "--pid", str(pid), "--duration", str(args.seconds),
            "--format", "raw", "--output", str(raw), "--rate", "200"],),
            kwargs={"capture_output": True})
        recorder.start()
        rps, p50 = wrk(f"http://www.upstream.test:{PLAIN_PORT}/", args.seconds,
                       netns=sandbox.info["netns"],
                       headers=[f"Authorization: Bearer {placeholder}"])
        recorder.join()
        own, inclusive, total = collapse(raw)
    print(f"full path under load: {rps:.0f} req/s, p50 {p50:.2f} ms; {total} samples")
    for title, counter in (("own", own), ("inclusive", inclusive)):
        print(f"\ntop {args.top} by {title} samples:")
        for frame, n in counter.most_common(args.top):
            print(f"{100 * n / total:6.1f}%  {frame}")


if __name__ == "__main__":
    main()
