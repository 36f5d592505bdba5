"""Cold start, measured in one invocation, in a throw-away world of its own (bench/world.py),
every sandbox on the image `base` (a read-only image root, never the host's):

- median wall time of `sandgate run -- true` (the CLI, against a running gateway);
- median create-to-first-exec through the control API, for gvisor (cold, and claimed from
  a warm pool of one) and microvm;
- the baselines: bare `runsc run` of the same command in a fresh namespace on the same
  image root (what gVisor itself costs), and on the host's root (what sandboxes ran on
  before images, for comparison).

    .venv/bin/python bench/coldstart.py [--runs N] [--vm-runs N]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import median_ms, report
from world import World, gateway_in, settings_for, world

from gateway.client import Client
from gateway.settings import Settings
from sandbox_net.images.store import ImageStore
from sandbox_net.runtime.base import RootImage, SandboxSpec
from sandbox_net.runtime.gvisor import bundle_config

EMPTY_POLICY = "version: 1\nname: bench-none\n"


def bare_runsc(runs: int, rootfs: Path) -> list[float]:
    samples = []
    with tempfile.TemporaryDirectory(prefix="sandgate-bench-runsc-") as tmp:
        state, bundle = Path(tmp) / "state", Path(tmp) / "bundle"
        bundle.mkdir()
        root = RootImage("bench", rootfs, Path(tmp) / "unused.ext4")
        config = bundle_config(SandboxSpec("b", "", Path(tmp), root=root))
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


def create_to_first_exec(client: Client, runtime: str, runs: int,
                         warm: bool = False) -> list[float]:
    samples = []
    for _ in range(runs):
        while warm and not client.request("GET", "/readyz")["warm_sandboxes"]:
            time.sleep(0.02)
        start = time.perf_counter()
        sandbox = client.create(policy="bench-none", runtime=runtime)
        result = sandbox.exec(["true"])
        samples.append(time.perf_counter() - start)
        assert result.exit_code == 0, result
        sandbox.delete()
    return samples


def sandgate_run(w: World, runs: int) -> list[float]:
    env = {**os.environ, **settings_for(w, workers=1).as_env()}
    run = ["nsenter", f"--net=/run/netns/{w.host}", sys.executable, "-m", "gateway.cli",
           "run", "--policy", "bench-none", "--", "true"]
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(run, env=env, check=True, capture_output=True)
        samples.append(time.perf_counter() - start)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--vm-runs", type=int, default=10)
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("benchmarks need root (namespaces, nftables, runsc)")
    base = ImageStore(Settings().images_dir).find("base")
    if base is None:
        sys.exit("no image base: run scripts/bootstrap.sh first")
    baseline = bare_runsc(args.runs, base.rootfs)
    host_root = bare_runsc(args.runs, Path("/"))
    with tempfile.TemporaryDirectory(prefix="sandgate-bench-") as tmp, world(Path(tmp)) as w:
        with gateway_in(w, workers=1) as client:
            client.put_policy("bench-none", EMPTY_POLICY)
            samples = sandgate_run(w, args.runs)
            gvisor = create_to_first_exec(client, "gvisor", args.runs)
            microvm = create_to_first_exec(client, "microvm", args.vm_runs) if args.vm_runs \
                else []
        # one gateway at a time: a second one's idle sandbox and workers would weigh on the
        # figures above
        with gateway_in(w, workers=1, slot=1, warm_pool=1) as warm_client:
            warm_client.put_policy("bench-none", EMPTY_POLICY)
            warm = create_to_first_exec(warm_client, "gvisor", args.runs, warm=True)
    report("coldstart_sandgate_run_true_median_ms", median_ms(samples))
    report("coldstart_gvisor_create_to_first_exec_median_ms", median_ms(gvisor))
    report("coldstart_gvisor_warm_pool_create_to_first_exec_median_ms", median_ms(warm))
    if microvm:
        report("coldstart_microvm_create_to_first_exec_median_ms", median_ms(microvm))
    report("coldstart_bare_runsc_true_median_ms", median_ms(baseline))
    report("coldstart_bare_runsc_host_root_true_median_ms", median_ms(host_root))
    report("coldstart_gvisor_vs_bare_runsc_ratio",
           round(median_ms(gvisor) / median_ms(baseline), 2))
    report("coldstart_bare_runsc_image_vs_host_root_ratio",
           round(median_ms(baseline) / median_ms(host_root), 2))


if __name__ == "__main__":
    main()
