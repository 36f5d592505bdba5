"""Slot allocation is persisted and never hands a live slot out twice, even under races."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from gateway.db import make_engine
from sandbox_net import slots


def test_concurrent_allocations_are_unique(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda i: slots.allocate(engine, f"{i:08x}"), range(40)))
    assert len({r.slot for r in results}) == 40
    second = make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")  # another process's view
    assert set(slots.allocated(second)) == {f"{i:08x}" for i in range(40)}
    slots.release(engine, f"{3:08x}")
    assert slots.allocate(engine, "feedface").slot == results[3].slot  # lowest free again
    engine.dispose()
    second.dispose()
