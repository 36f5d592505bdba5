"""The DNS throttle: a flooding sandbox's answers are held and then dropped (counted, and
summarised in one dropped_by_throttle row, so counts add up); another sandbox is answered at
once meanwhile; a full audit queue holds everyone instead of stalling; idle sources are
forgotten. The clock is the throttle's own (time.monotonic), moved by the test."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.dataplane import dns_throttle
from gateway.dataplane.dns_throttle import DnsThrottle
from gateway.dataplane.registry import SandboxContext, SyntheticPool
from gateway.timing import DNS_BURST, DNS_HELD, DNS_QUERIES_PER_SECOND
from tests.doubles import SANDBOX_IP, SYNTHETIC, Plane, data_plane, policy_handle

OTHER_IP = "10.77.0.6"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(dns_throttle.time, "monotonic", clock)
    return clock


@pytest.fixture
def plane(tmp_path: Path) -> Plane:
    plane = data_plane(tmp_path, "version: 1\nname: t\nrules: []\n")
    other = policy_handle("version: 1\nname: o\nrules: []\n")
    plane.state.registry.add(SandboxContext(id="other000", ip=OTHER_IP, handle=other,
                                            pool=SyntheticPool(SYNTHETIC)))
    return plane


def flood(throttle: DnsThrottle, source: str, count: int, answered: list[str]) -> None:
    for _ in range(count):
        if throttle.admit(source):
            answered.append(source)
        else:
            throttle.hold(source, lambda: answered.append(source))


def test_a_flood_is_held_then_dropped_and_counts_add_up(plane: Plane, clock: Clock) -> None:
    throttle = DnsThrottle(plane.state.registry, plane.sink)  # type: ignore[arg-type]
    answered: list[str] = []
    sent = DNS_BURST + DNS_HELD + 744
    flood(throttle, SANDBOX_IP, sent, answered)
    assert len(answered) == DNS_BURST                      # the burst, at once
    flood(throttle, OTHER_IP, 3, answered)                 # another sandbox: not held
    assert answered[-3:] == [OTHER_IP] * 3
    clock.now += (DNS_HELD + 0.5) / DNS_QUERIES_PER_SECOND   # tokens for every held query
    throttle.drain()
    assert answered.count(SANDBOX_IP) == DNS_BURST + DNS_HELD
    throttle.summarise()
    (summary,) = plane.rows
    assert (summary["sandbox_id"], summary["reason"], summary["dropped"]) == \
        (plane.sandbox.id, "dropped_by_throttle", 744)
    assert answered.count(SANDBOX_IP) + summary["dropped"] == sent
    throttle.summarise()
    assert len(plane.rows) == 1                            # counted once


def test_a_full_audit_queue_holds_instead_of_stalling(plane: Plane, clock: Clock) -> None:
    throttle = DnsThrottle(plane.state.registry, plane.sink)  # type: ignore[arg-type]
    plane.sink.room = 0
    answered: list[str] = []
    flood(throttle, SANDBOX_IP, 10, answered)
    assert answered == []                                  # held, not answered, not blocked
    plane.sink.room = None
    throttle.drain()
    assert answered == [SANDBOX_IP] * 10


def test_rows_the_queue_refused_are_counted(plane: Plane, clock: Clock) -> None:
    throttle = DnsThrottle(plane.state.registry, plane.sink)  # type: ignore[arg-type]
    throttle.lost(plane.sandbox.id)
    throttle.lost(plane.sandbox.id)
    throttle.summarise()
    assert [r["dropped"] for r in plane.rows] == [2]


def test_idle_sources_are_forgotten(plane: Plane, clock: Clock) -> None:
    throttle = DnsThrottle(plane.state.registry, plane.sink)  # type: ignore[arg-type]
    flood(throttle, SANDBOX_IP, 5, [])
    assert throttle.tracked() == 1
    clock.now += 6 / DNS_QUERIES_PER_SECOND
    throttle.drain()
    assert throttle.tracked() == 0
