"""Cold start: median wall time of `sandgate run -- true` (10 runs) against a running
gateway, beside bare `runsc run` of the same command in a fresh namespace (the baseline:
what gVisor itself costs) measured in the same invocation.

    .venv/bin/python bench/coldstart.py [--runs N]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from common import median_ms, report, topology_and_gateway

from sandbox_net.runtime.base import SandboxSpec
from sandbox_net.runtime.gvisor import bundle_config


def bare_runsc(runs: int) -> list[float]:
    samples = []
    with tempfile.TemporaryDirectory(prefix="sandgate-bench-runsc-") as tmp:
        state, bundle = Path(tmp) / "state", Path(tmp) / "bundle"
        bundle.mkdir()
        config = bundle_config(SandboxSpec("b", "", Path(tmp)))
        config["process"]["args"] = ["/bin/true"]
        (bundle / "config.json").write_text(json.dumps(config))
        for i in range(runs):
            netns = f"sgbench{i}"
            start = time.perf_counter()
            subprocess.run(["ip", "netns", "add", netns], check=True)
            runsc = shutil.which("runsc") or "runsc"
            subprocess.run(["nsenter", f"--net=/run/netns/{netns}", runsc,
                            f"--root={state}", "--network=host", "--ignore-cgroups",
                            "--platform=ptrace", "run", f"--bundle={bundle}", f"b{i}"],
                           check=True, stdout=subprocess.DEVNULL)
            subprocess.run(["ip", "netns", "del", netns], check=True)
            samples.append(time.perf_counter() - start)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    baseline = bare_runsc(args.runs)
    with topology_and_gateway() as (_topo, gw):
        policy = gw.policy("none", [])
        samples = []
        for _ in range(args.runs):
            start = time.perf_counter()
            result = gw.run(policy, "true")
            samples.append(time.perf_counter() - start)
            assert result.returncode == 0, result.stderr
    report("coldstart_sandgate_run_true_median_ms", median_ms(samples))
    report("coldstart_bare_runsc_true_median_ms", median_ms(baseline))
    report("coldstart_sandgate_vs_bare_runsc_ratio",
           round(median_ms(samples) / median_ms(baseline), 2))


if __name__ == "__main__":
    main()
