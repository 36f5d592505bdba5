"""Shared set-up for benchmarks: the test topology and a gateway, torn down on exit."""

from __future__ import annotations

import contextlib
import os
import statistics
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests import leases
from tests.conftest import force_clean, new_prefix
from tests.harness import Gateway
from tests.topology import Topology


@contextlib.contextmanager
def topology_and_gateway() -> Iterator[tuple[Topology, Gateway]]:
    if os.geteuid() != 0:
        sys.exit("benchmarks need root (namespaces, nftables, runsc)")
    leases.sweep_dead_runs(force_clean)
    with tempfile.TemporaryDirectory(prefix="sandgate-bench-") as tmp:
        topo = Topology(new_prefix(), Path(tmp) / "inet")
        gw = Gateway(new_prefix(), Path(tmp) / "gw", topo)
        try:
            topo.start()
            gw.start()
            yield topo, gw
        finally:
            gw.stop()
            topo.stop()
            force_clean(gw.prefix)
            force_clean(topo.prefix)


def median_ms(samples: list[float]) -> float:
    return round(statistics.median(samples) * 1000, 1)


def report(name: str, value: object) -> None:
    print(f"{name}: {value}", flush=True)
