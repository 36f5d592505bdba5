"""Cold start, measured in one invocation:

- median wall time of `sandgate run -- true` (the CLI, against a running gateway);
- median create-to-first-exec through the control API, for gvisor and microvm;
- the baseline: bare `runsc run` of the same command in a fresh namespace (what gVisor
  itself costs).

    .venv/bin/python bench/coldstart.py [--runs N] [--vm-runs N]
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
from tests.harness import Gateway


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


def create_to_first_exec(gw: Gateway, runtime: str, runs: int) -> list[float]:
    from gateway.client import Client

    samples = []
    with Client(gw.api_url, gw.token("admin", f"bench-{runtime}")) as client:
        client.put_policy("bench-none", "version: 1\nname: bench-none\n")
        for _ in range(runs):
            start = time.perf_counter()
            sandbox = client.create(policy="bench-none", runtime=runtime)
            result = sandbox.exec(["true"])
            samples.append(time.perf_counter() - start)
            assert result.exit_code == 0, result
            sandbox.delete()
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--vm-runs", type=int, default=10)
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
        gvisor = create_to_first_exec(gw, "gvisor", args.runs)
        microvm = create_to_first_exec(gw, "microvm", args.vm_runs) if args.vm_runs else []
    report("coldstart_sandgate_run_true_median_ms", median_ms(samples))
    report("coldstart_gvisor_create_to_first_exec_median_ms", median_ms(gvisor))
    if microvm:
        report("coldstart_microvm_create_to_first_exec_median_ms", median_ms(microvm))
    report("coldstart_bare_runsc_true_median_ms", median_ms(baseline))
    report("coldstart_gvisor_vs_bare_runsc_ratio",
           round(median_ms(gvisor) / median_ms(baseline), 2))


if __name__ == "__main__":
    main()
