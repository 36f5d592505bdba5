"""Policy decision cost against the number of rules: decisions per second and p99 decision
time for policies of 10, 1,000 and 100,000 rules, the same mix of questions for each
(allowed names, wildcard names, HTTP path rules, and misses). The 10-rule policy is the
baseline the others are compared with. `overlap`: three rules with paths on one name, all
matching each request (the most specific decides).

    .venv/bin/python bench/policy_match.py [--decisions N]
"""

from __future__ import annotations

import argparse
import gc
import random
import statistics
import time

from common import report

from policies.matcher import CompiledPolicy, Request
from policies.schema import PolicySpec

SIZES = (10, 1_000, 100_000)


def build(size: int) -> CompiledPolicy:
    rules = []
    for i in range(size):
        kind = i % 4
        if kind == 0:
            rules.append({"id": f"r{i}", "hosts": [f"svc{i}.bench.test"], "ports": [443]})
        elif kind == 1:
            rules.append({"id": f"r{i}", "hosts": [f"*.zone{i}.bench.test"]})
        elif kind == 2:
            rules.append({"id": f"r{i}", "hosts": [f"api{i}.bench.test"], "methods": ["GET"],
                          "paths": ["/v1/**", "/health"]})
        else:
            rules.append({"id": f"r{i}", "action": "deny", "hosts": [f".deny{i}.bench.test"]})
    spec = PolicySpec.model_validate({"version": 1, "name": f"bench{size}", "rules": rules})
    return CompiledPolicy(spec, "bench")


def overlapping() -> tuple[CompiledPolicy, list[Request]]:
    rules = [{"id": "broad", "hosts": ["api.bench.test"], "paths": ["/x/**", "/repos/**"]},
             {"id": "repo", "hosts": ["api.bench.test"], "paths": ["/repos/*/**"]},
             {"id": "issues", "hosts": ["api.bench.test"],
              "paths": ["/repos/*/pulls", "/repos/*/issues"]}]
    spec = PolicySpec.model_validate({"version": 1, "name": "overlap", "rules": rules})
    return CompiledPolicy(spec, "bench"), [
        Request(443, "https", host="api.bench.test", method="GET", path=f"/repos/r{i}/issues")
        for i in range(1000)]


def questions(size: int, count: int, rng: random.Random) -> list[Request]:
    out = []
    for _ in range(count):
        i = rng.randrange(size)
        kind = rng.randrange(5)
        if kind == 0:
            host = f"svc{i - i % 4}.bench.test"
        elif kind == 1:
            host = f"x.y.zone{i - i % 4 + 1}.bench.test"
        elif kind == 2:
            host = f"api{i - i % 4 + 2}.bench.test"
        elif kind == 3:
            host = f"a.deny{i - i % 4 + 3}.bench.test"
        else:
            host = f"miss{i}.elsewhere.test"
        out.append(Request(443, "https", host=host, method="GET", path="/v1/items/7"))
    return out


def measure(policy: CompiledPolicy, qs: list[Request]) -> tuple[float, float]:
    """(decisions per second, p99 in microseconds)."""
    samples = []
    clock = time.perf_counter_ns
    decide = policy.decide
    for q in qs:
        start = clock()
        decide(q)
        samples.append(clock() - start)
    total = sum(samples) / 1e9
    p99 = statistics.quantiles(samples, n=100)[98] / 1000
    return len(qs) / total, p99


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--decisions", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    rng = random.Random(7)
    cases: dict[int | str, tuple[CompiledPolicy, list[Request]]] = {}
    for size in SIZES:
        cases[size] = (build(size), questions(size, args.decisions, rng))
    cases["overlap"] = overlapping()
    gc.collect()
    gc.freeze()  # as the gateway does after compiling a policy
    samples: dict[int | str, list[tuple[float, float]]] = {size: [] for size in cases}
    for _ in range(args.rounds):  # interleaved, so machine noise hits every size alike
        for case, (policy, qs) in cases.items():
            samples[case].append(measure(policy, qs))
    p99 = {}
    for size in SIZES:
        rate = statistics.median(r for r, _ in samples[size])
        p99[size] = statistics.median(p for _, p in samples[size])
        report(f"policy_{size}_rules_decisions_per_s", round(rate))
        report(f"policy_{size}_rules_p99_us", round(p99[size], 2))
    report("policy_p99_100000_vs_10_ratio", round(p99[100_000] / p99[10], 2))
    report("policy_overlap_decisions_per_s",
           round(statistics.median(r for r, _ in samples["overlap"])))


if __name__ == "__main__":
    main()
