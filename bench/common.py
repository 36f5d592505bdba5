"""What the benchmark scripts share: how a figure is printed and summarised."""

from __future__ import annotations

import statistics


def median_ms(samples: list[float]) -> float:
    return round(statistics.median(samples) * 1000, 1)


def report(name: str, value: object) -> None:
    print(f"{name}: {value}", flush=True)
