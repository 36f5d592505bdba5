"""Audit rows from a proxy worker to the main process: microseconds of CPU per row for the
worker's end (HubClient.record and its writes) and the main process's end (the hub reading,
decoding and handing each row to the audit writer's queue), over a real Unix socket, with
`--burst` rows recorded in each turn of the worker's event loop (1: one request at a time;
more: several connections' rows in one turn, as under load). Both ends run in this one
process, on one event loop; the writer is a queue that keeps nothing.

Compare two source trees in one invocation by running it under each in turns:

    PYTHONPATH=/old/tree .venv/bin/python bench/hub_records.py
    PYTHONPATH=.         .venv/bin/python bench/hub_records.py
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from common import report

from gateway.dataplane.registry import Registry
from gateway.processes import protocol
from gateway.processes.authority import Authority
from gateway.processes.hub import Hub
from gateway.processes.hub_client import HubClient


class Discard:
    """The audit writer's queue, keeping nothing."""

    def __init__(self) -> None:
        self.rows = 0

    def offer(self, **_row: Any) -> bool:
        self.rows += 1
        return True


def row(n: int) -> dict[str, Any]:
    """A row as the audit trail writes one for an allowed, injected HTTPS request."""
    return dict(time=time.time(), sandbox_id="a1b2c3d4", policy="bench", policy_version="v1",
                rule="api", decision="allow", reason="allowed_by_rule", protocol="http",
                owner="tok-1", method="GET", scheme="https", host="api.bench.test", port=443,
                path=f"/v1/items/{n}", query=None,
                request_headers='[["authorization","<redacted>"],["accept","*/*"]]',
                response_headers='[["content-type","application/json"]]', status=200,
                bytes_up=0, bytes_down=512, duration_ms=1.234, upstream="203.0.113.7:443",
                sni="api.bench.test", secrets="BENCH_TOKEN", error=None)


async def one_round(rows: int, burst: int) -> tuple[float, float]:
    """(µs of CPU per row, µs of wall time per row) for `rows` rows."""
    with tempfile.TemporaryDirectory(prefix="sandgate-bench-hub-") as tmp:
        sink = Discard()
        registry = Registry()
        hub = Hub(Authority(registry), sink, registry, Path(tmp) / "hub.sock")  # type: ignore[arg-type]
        await hub.start()
        reader, writer = await asyncio.open_unix_connection(str(hub.path), limit=2**24)
        client = HubClient(reader, writer)
        client.send(protocol.Hello(worker=0, pid=1))
        await reader.readline()            # Synced: the hub knows this worker
        made = [row(n) for n in range(rows)]
        cpu, wall = time.process_time(), time.perf_counter()
        for start in range(0, rows, burst):
            for one in made[start:start + burst]:
                client.record(one)
            await client.drained()
            await asyncio.sleep(0)         # the turn ends
        while sink.rows < rows:
            await asyncio.sleep(0)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        writer.close()
        await hub.close(timeout=5)
    return cpu / rows * 1e6, wall / rows * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    for burst in (1, 8):
        results = [asyncio.run(one_round(args.rows, burst)) for _ in range(args.rounds)]
        report(f"hub_record_cpu_us_per_row_burst{burst}",
               round(statistics.median(c for c, _ in results), 2))
        report(f"hub_record_wall_us_per_row_burst{burst}",
               round(statistics.median(w for _, w in results), 2))


if __name__ == "__main__":
    main()
