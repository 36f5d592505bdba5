"""Every gateway benchmark in one invocation, each figure against its baseline measured in the
same run, in a throw-away world of its own (bench/world.py). Prints `name: value` lines.

    .venv/bin/python bench/run_all.py [--quick]

Load comes from wrk inside a namespace: the host namespace for the direct baseline, a plain
client namespace redirected to a bare mitmproxy for that baseline, and a real sandbox's
namespace for the gateway. The upstream is a trivial asyncio server (bench/upstream.py), so
the figures are the proxies' costs, not the upstream's.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import bulk
import density
from common import median_ms, report
from load import wrk
from world import PLAIN_PORT, TLS_PORT, World, gateway_in, settings_for, world

from gateway.client import Client, Sandbox
from sandbox_net.testnet import HTTP_IP, HTTPS_IP

SECRET = "bench-token-value"
POLICY = f"""version: 1
name: bench
limits: {{request_body_bytes: 2147483648}}
rules:
  - id: plain      # measures injection over plain HTTP: opted into knowingly
    hosts: [www.upstream.test]
    ports: [{PLAIN_PORT}]
    protocols: [http]
    allow_cleartext_inject: true
    inject: [{{secret: BENCH_TOKEN, as: bearer}}]
  - id: tls
    hosts: [secure.upstream.test]
    ports: [{TLS_PORT}]
    inject: [{{secret: BENCH_TOKEN, as: bearer}}]
"""
EMPTY_POLICY = "version: 1\nname: bench-none\n"


class Load:
    """wrk runs from three places against the same upstream."""

    def __init__(self, the_world: World, seconds: int) -> None:
        self.world = the_world
        self.seconds = seconds

    def direct(self, path: str, tls: bool = False, **kw: object) -> tuple[float, float]:
        url = (f"https://{HTTPS_IP}:{TLS_PORT}{path}" if tls
               else f"http://{HTTP_IP}:{PLAIN_PORT}{path}")
        return wrk(url, self.seconds, netns=self.world.host, **kw)  # type: ignore[arg-type]

    def bare(self, path: str, tls: bool = False, seconds: int | None = None,
             **kw: object) -> tuple[float, float]:
        url = (f"https://{HTTPS_IP}:{TLS_PORT}{path}" if tls
               else f"http://{HTTP_IP}:{PLAIN_PORT}{path}")
        return wrk(url, seconds or self.seconds, netns=self.world.bare_client,
                   **kw)  # type: ignore[arg-type]

    def gateway(self, sandbox: Sandbox, path: str, placeholder: str, tls: bool = False,
                headers: list[str] | None = None, seconds: int | None = None,
                **kw: object) -> tuple[float, float]:
        url = (f"https://secure.upstream.test:{TLS_PORT}{path}" if tls
               else f"http://www.upstream.test:{PLAIN_PORT}{path}")
        return wrk(url, seconds or self.seconds, netns=sandbox.info["netns"],  # type: ignore[arg-type]
                   headers=[f"Authorization: Bearer {placeholder}", *(headers or [])], **kw)


def bench_sandbox(client: Client) -> tuple[Sandbox, str]:
    client.put_policy("bench", POLICY)
    client.put_secret("BENCH_TOKEN", SECRET)
    sandbox = client.create(policy="bench", secrets=["BENCH_TOKEN"])
    placeholder = sandbox.exec(["printenv", "BENCH_TOKEN"]).stdout.strip()
    return sandbox, placeholder


def gateway_processes(home: Path) -> tuple[str, list[int]]:
    """The main process's pid, and its proxy workers' pids."""
    main = (home / "gateway.lock").read_text().strip()
    workers = []
    for proc in Path("/proc").iterdir():
        try:
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
            argv = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if fields[1] == main and b"gateway.processes.worker" in argv:
            workers.append(int(proc.name))
    return main, workers


def bulk_transfers(the_world: World, home: Path, sandbox: Sandbox, placeholder: str,
                   size: int) -> None:
    """One download and one upload of `size` bytes, direct, through bare mitmproxy and
    through the gateway (an injecting rule: its responses are scrubbed as they stream)."""
    plain = f"{HTTP_IP}:{PLAIN_PORT}"
    named, auth = ["Host: www.upstream.test"], [f"Authorization: Bearer {placeholder}"]
    places = {"direct": (the_world.host, plain, named),
              "bare": (the_world.bare_client, plain, named),
              "gateway": (sandbox.info["netns"], f"www.upstream.test:{PLAIN_PORT}", auth)}
    workers = lambda: gateway_processes(home)[1]  # noqa: E731
    speeds, growth = {}, 0.0
    with bulk.payload(size) as source:
        for place, (netns, hostport, headers) in places.items():
            down, grown_down = bulk.peak_growth_mib(workers, partial(
                bulk.download, netns, f"http://{hostport}/stream/{size}", headers))
            up, grown_up = bulk.peak_growth_mib(workers, partial(
                bulk.upload, netns, f"http://{hostport}/sink", source, headers))
            speeds[place] = (down, up)
            if place == "gateway":
                growth = max(grown_down, grown_up)
    for index, direction in enumerate(("download", "upload")):
        for place in places:
            report(f"bulk_{direction}_{place}_mbps", round(speeds[place][index], 1))
        report(f"bulk_{direction}_vs_bare_ratio",
               round(speeds["gateway"][index] / speeds["bare"][index], 3))
    report("bulk_gateway_worker_rss_growth_mib", round(growth, 1))


def gateway_cpu_seconds(home: Path) -> float:
    """CPU time used so far by a gateway's processes: the main one and its proxy workers."""
    main, workers = gateway_processes(home)
    total = 0.0
    for pid in [int(main), *workers]:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def throughput(load: Load, home: Path, sandbox: Sandbox, placeholder: str) -> tuple[float, float]:
    """(requests per second, CPU cores the gateway used) under 8 keep-alive connections."""
    cpu, start = gateway_cpu_seconds(home), time.monotonic()
    rps, _ = load.gateway(sandbox, "/", placeholder, connections=8)
    return rps, (gateway_cpu_seconds(home) - cpu) / (time.monotonic() - start)


def wait_warm(client: Client) -> None:
    while not client.request("GET", "/readyz")["warm_sandboxes"]:
        time.sleep(0.02)


def create_to_first_exec(client: Client, runs: int, warm: bool = False) -> float:
    """Median milliseconds from the create call to the end of a first `true` (with `warm`,
    each time once the pool has a started sandbox waiting)."""
    client.put_policy("bench-none", EMPTY_POLICY)
    samples = []
    for _ in range(runs):
        if warm:
            wait_warm(client)
        start = time.perf_counter()
        sandbox = client.create(policy="bench-none")
        sandbox.exec(["true"])
        samples.append(time.perf_counter() - start)
        sandbox.delete()
    return round(statistics.median(samples) * 1000, 1)


REPO = Path(__file__).resolve().parent.parent


def one_liner(the_world: World, client: Client, runs: int) -> None:
    """`sandgate run -- true` as a person types it, against the gateway with a warm pool
    (each run once a started sandbox waits, as between two commands typed), the CLI's own
    start included; against two baselines of the same minute: the interpreter's bare start
    and the API's create-to-first-exec from the warm pool."""
    env = {**os.environ, **settings_for(the_world, workers=2, slot=1, warm_pool=1).as_env()}
    host = ["nsenter", f"--net=/run/netns/{the_world.host}"]
    cli = [*host, sys.executable, "-m", "gateway.cli", "run", "--policy", "bench-none", "--",
           "true"]
    samples, bare = [], []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run([*host, sys.executable, "-c", "pass"], check=True)
        bare.append(time.perf_counter() - start)
        wait_warm(client)
        start = time.perf_counter()
        subprocess.run(cli, env=env, cwd=REPO, check=True, capture_output=True)
        samples.append(time.perf_counter() - start)
    report("run_one_liner_ms", median_ms(samples))
    report("run_one_liner_range_ms", f"{min(samples) * 1000:.0f}-{max(samples) * 1000:.0f}")
    report("python_start_ms", median_ms(bare))
    report("api_warm_create_to_first_exec_ms", create_to_first_exec(client, runs, warm=True))


def churn_and_density(w: World, sandbox: Sandbox, placeholder: str, count: int,
                      seconds: int) -> None:
    """`count` sandboxes created at concurrency 8 (cold: this gateway has no warm pool),
    against creates one at a time; what each costs in memory; then the first sandbox's p99
    with the others idle and with each of them driving its own load."""
    home = w.workdir / "gateway-0"
    uds = str(home / "control.sock")

    def make(c: Client) -> Sandbox:
        return c.create(policy="bench", secrets=["BENCH_TOKEN"])

    sequential, seq_seconds = density.create_many(uds, 4, 1, make)
    density.delete_all(sequential, 8)
    report("create_per_s_sequential", round(4 / seq_seconds, 2))
    available = _mem_available_mib()
    gateway_before, fds_before = _gateway_rss_mib(home), _gateway_fds(home)
    made, seconds_taken = density.create_many(uds, count, 8, make)
    report("create_per_s", round(count / seconds_taken, 2))
    try:
        runsc = density.pss_mib(home / "runsc") / (count + 1)    # and the bench sandbox
        grown = (_gateway_rss_mib(home) - gateway_before) / count
        report("sandbox_runsc_pss_mb", round(runsc, 1))
        report("sandbox_gateway_rss_growth_mb", round(grown, 2))
        report("sandbox_rss_mb", round(runsc + grown, 1))
        report("sandbox_gateway_fds", round((_gateway_fds(home) - fds_before) / count, 1))
        report("sandbox_mem_available_drop_mb", round((available - _mem_available_mib())
                                                      / count, 1))
        url = f"http://www.upstream.test:{PLAIN_PORT}/"
        with ThreadPoolExecutor(8) as pool:
            own = list(pool.map(
                lambda s: s.exec(["printenv", "BENCH_TOKEN"]).stdout.strip(), made))
        neighbours = [density.neighbour_load(s, url, [f"Authorization: Bearer {p}"],
                                             seconds + 2) for s, p in zip(made, own,
                                                                          strict=True)]
        victim = density.victim_p99(sandbox, url, [f"Authorization: Bearer {placeholder}"],
                                    seconds)
        rounds = [(victim(), density.busy_p99(victim, neighbours, seconds)) for _ in range(2)]
        report("busy_neighbours", count)
        report("quiet_neighbour_p99_ms", density.median([q for q, _ in rounds]))
        report("busy_neighbour_p99_ms", density.median([b for _, b in rounds]))
    finally:
        density.delete_all(made, 8)
    density.report_limits(report)


def _mem_available_mib() -> float:
    return next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                if line.startswith("MemAvailable:")) / 1024


def _gateway_fds(home: Path) -> int:
    """Open descriptors of the gateway's processes (a bound per process: ulimit -n)."""
    main, workers = gateway_processes(home)
    return sum(len(list(Path(f"/proc/{pid}/fd").iterdir())) for pid in [int(main), *workers])


def _gateway_rss_mib(home: Path) -> float:
    main, workers = gateway_processes(home)
    return sum(bulk.rss_kib([pid]) for pid in [int(main), *workers]) / 1024


def latencies(load: Load, sandbox: Sandbox, placeholder: str) -> None:
    """Added median latency over HTTPS, one connection at a time (no queueing in it), for
    the gateway and for bare mitmproxy (both decrypt, re-encrypt and buffer the bodies)."""
    cases = {"": ("/", []), "_new_connection": ("/", ["Connection: close"]),
             "_1mib": ("/1m", [])}
    for suffix, (path, headers) in cases.items():
        named = ["Host: secure.upstream.test", *headers]
        _, direct = load.direct(path, tls=True, connections=1, headers=named)
        _, bare = load.bare(path, tls=True, connections=1, headers=named)
        _, gated = load.gateway(sandbox, path, placeholder, tls=True, connections=1,
                                headers=headers)
        report(f"direct_p50_ms{suffix}", round(direct, 3))
        report(f"bare_mitmproxy_added_p50_ms{suffix}", round(bare - direct, 3))
        report(f"gateway_added_p50_ms{suffix}", round(gated - direct, 3))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="about 60 s in all")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("benchmarks need root (namespaces, nftables, runsc)")
    # three rounds even when quick: a ratio is the median of three, never one lucky turn
    seconds, runs, rounds = (2, 5, 3) if args.quick else (6, 10, 3)
    crowd = 16 if args.quick else 100
    named = ["Host: www.upstream.test"]
    with tempfile.TemporaryDirectory(prefix="sandgate-bench-") as tmp, world(Path(tmp)) as w:
        load = Load(w, seconds)
        direct_rps, _ = load.direct("/", connections=4, headers=named)
        report("direct_rps", round(direct_rps))
        with gateway_in(w, workers=1, slot=0) as one, \
                gateway_in(w, workers=2, slot=1, warm_pool=1) as two:
            sandbox, placeholder = bench_sandbox(one)
            sandbox2, placeholder2 = bench_sandbox(two)
            wait_warm(two)   # no sandbox starting during the loads
            load.bare("/", seconds=1, headers=named)                 # warm-ups
            load.gateway(sandbox, "/", placeholder, seconds=1)
            load.gateway(sandbox2, "/", placeholder2, seconds=1)
            # in turns: this shared machine's speed drifts over minutes
            pairs = [(load.bare("/", connections=4, headers=named)[0],
                      load.gateway(sandbox, "/", placeholder, connections=4)[0])
                     for _ in range(rounds)]
            bare_rps = statistics.median(b for b, _ in pairs)
            full_rps = statistics.median(f for _, f in pairs)
            report("bare_mitmproxy_rps", round(bare_rps))
            report("full_path_rps", round(full_rps))
            report("full_vs_bare_mitmproxy_ratio", round(full_rps / bare_rps, 3))
            latencies(load, sandbox, placeholder)
            bulk_transfers(w, w.workdir / "gateway-0", sandbox, placeholder,
                           (256 if args.quick else 1024) * 1024 * 1024)
            scaling = [(throughput(load, w.workdir / "gateway-0", sandbox, placeholder),
                        throughput(load, w.workdir / "gateway-1", sandbox2, placeholder2))
                       for _ in range(rounds)]
            report("coldstart_gvisor_ms", create_to_first_exec(one, runs))
            report("coldstart_gvisor_warm_pool_ms", create_to_first_exec(two, runs, warm=True))
            one_liner(w, two, runs)
            churn_and_density(w, sandbox, placeholder, crowd, seconds)
        one_worker = statistics.median(a[0] for a, _ in scaling)
        two_workers = statistics.median(b[0] for _, b in scaling)
        report("workers1_rps", round(one_worker))
        report("workers1_gateway_cores", round(statistics.median(a[1] for a, _ in scaling), 2))
        report("workers2_rps", round(two_workers))
        report("workers2_gateway_cores", round(statistics.median(b[1] for _, b in scaling), 2))
        report("workers2_vs_1_ratio", round(two_workers / one_worker, 3))

if __name__ == "__main__":
    main()
