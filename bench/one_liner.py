"""`sandgate run --policy bench-none -- true` against a running gateway with a warm pool of
one, in a throw-away world of its own (bench/world.py), each run once a started sandbox
waits (as between two typed commands). In turns, in one invocation: the interpreter's bare
start (`python -c pass`), the CLI of this tree, and with `--baseline-tree DIR` the CLI of
another checkout (its `gateway` package run against this tree's gateway); then where the
time of one run goes (create, local-exec, runsc exec, the output relays, delete), measured
from this tree's own client in this process.

    sudo .venv/bin/python bench/one_liner.py [--runs N] [--baseline-tree /path/to/old]
"""

from __future__ import annotations

import argparse
import itertools
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from common import median_ms, report
from world import gateway_in, settings_for, world

from gateway.client import Client
from gateway.processes.launch import ControlClient

EMPTY_POLICY = "version: 1\nname: bench-none\n"


def wait_warm(client: Client) -> None:
    while not client.request("GET", "/readyz")["warm_sandboxes"]:
        time.sleep(0.02)


def timed(argv: list[str], env: dict[str, str], cwd: Path) -> float:
    start = time.perf_counter()
    subprocess.run(argv, env=env, cwd=cwd, check=True, capture_output=True)
    return time.perf_counter() - start


def phases(control: ControlClient) -> dict[str, float]:
    """One run's steps, as the CLI takes them (gateway.cli.attached.run_in_sandbox)."""
    from gateway.cli.attached import Attached

    marks = {"start": time.perf_counter()}
    sandbox = control.create_sandbox(runtime="gvisor", image="base", env={}, secrets=[],
                                     policy="bench-none")
    marks["create"] = time.perf_counter()
    argv = control.local_exec(sandbox["id"], ["true"], env={}, cwd=None)
    marks["local_exec"] = time.perf_counter()
    attached = Attached(argv)
    attached.process.wait()
    marks["runsc_exec"] = time.perf_counter()
    attached.wait()
    marks["relays"] = time.perf_counter()
    control.delete_sandbox(sandbox["id"], wait=False)
    marks["delete"] = time.perf_counter()
    attached.drain()
    marks["drain"] = time.perf_counter()
    names = list(marks)
    return {b: marks[b] - marks[a] for a, b in itertools.pairwise(names)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--baseline-tree", type=Path, default=None)
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("benchmarks need root (namespaces, nftables, runsc)")
    trees = {"this": REPO, **({"baseline": args.baseline_tree} if args.baseline_tree else {})}
    samples: dict[str, list[float]] = {"python": [], **{name: [] for name in trees}}
    steps: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory(prefix="sandgate-bench-") as tmp, world(Path(tmp)) as w:
        config = settings_for(w, workers=1, warm_pool=1)
        env = {**os.environ, **config.as_env()}
        host = ["nsenter", f"--net=/run/netns/{w.host}"]
        cli = [*host, sys.executable, "-m", "gateway.cli", "run", "--policy", "bench-none",
               "--", "true"]
        with gateway_in(w, workers=1, warm_pool=1) as client:
            client.put_policy("bench-none", EMPTY_POLICY)
            control = ControlClient(control_socket=config.control_socket)
            for _ in range(args.runs):
                samples["python"].append(timed([*host, sys.executable, "-c", "pass"], env, REPO))
                for name, tree in trees.items():
                    wait_warm(client)
                    samples[name].append(timed(cli, env, tree))
                wait_warm(client)
                steps.append(phases(control))
    report("python_start_ms", median_ms(samples["python"]))
    for name in trees:
        report(f"run_one_liner_{name}_tree_ms", median_ms(samples[name]))
        report(f"run_one_liner_{name}_tree_range_ms",
               f"{min(samples[name]) * 1000:.0f}-{max(samples[name]) * 1000:.0f}")
    for step in steps[0]:
        report(f"step_{step}_ms", median_ms([s[step] for s in steps]))


if __name__ == "__main__":
    main()
