"""The shared state's holder: connection counts across holders (workers), and what a dead
worker gives back."""

from __future__ import annotations

from gateway.dataplane.registry import Registry
from gateway.processes.authority import Authority


def authority() -> Authority:
    return Authority(Registry())


def test_the_limit_counts_every_holder() -> None:
    a = authority()
    assert a.acquire_for("worker-0", "s", 3)
    assert a.acquire_for("worker-1", "s", 3)
    assert a.acquire_for("worker-1", "s", 3)
    assert not a.acquire_for("worker-0", "s", 3)      # 3 open across both workers
    a.release_for("worker-1", "s")
    assert a.acquire_for("worker-0", "s", 3)
    assert a.open_connections("s") == 3


def test_a_dead_worker_gives_its_connections_back() -> None:
    a = authority()
    for _ in range(2):
        a.acquire_for("worker-0-111", "s", 10)
    a.acquire_for("worker-1-222", "s", 10)
    a.forget_holder("worker-0-111")
    assert a.open_connections("s") == 1


def test_a_release_never_goes_below_zero_or_touches_another_holder() -> None:
    a = authority()
    a.acquire_for("worker-0", "s", 10)
    a.release_for("worker-1", "s")
    a.release_for("worker-0", "s")
    a.release_for("worker-0", "s")
    assert a.open_connections("s") == 0

