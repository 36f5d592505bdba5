"""The shared state's holder: connection counts across holders (workers), and what a dead
worker gives back."""

from __future__ import annotations

from ipaddress import IPv4Network

import pytest

from gateway.dataplane.registry import Registry, RegistryListener, SandboxContext, SyntheticPool
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




class Heard(RegistryListener):
    """What the hub would forward to the proxy workers."""

    def __init__(self) -> None:
        self.told: list[str] = []

    def quarantined(self, sandbox: SandboxContext) -> None:
        self.told.append(sandbox.id)


def registered() -> tuple[Authority, SandboxContext, Heard]:
    registry = Registry()
    registry.listener = heard = Heard()
    sandbox = SandboxContext(id="s", ip="10.77.0.2", handle=None,  # type: ignore[arg-type]
                             pool=SyntheticPool(IPv4Network("198.18.0.0/24")))
    registry.add(sandbox)
    return Authority(registry), sandbox, heard


def test_a_quarantine_is_told_and_kept_once_even_when_the_caller_marked_it_first() -> None:
    """The main process's DNS server marks its own copy before asking: the workers must
    still hear, and the record is written once however often the sandbox trips."""
    a, sandbox, heard = registered()
    kept: list[str] = []
    a.keep_quarantine = kept.append
    sandbox.quarantined = True           # as GatewayState.quarantine does
    for _ in range(3):
        a.quarantine("s")
    assert (heard.told, kept) == (["s"], ["s"])


def test_a_quarantine_the_database_refuses_is_still_in_force(
        caplog: pytest.LogCaptureFixture) -> None:
    a, sandbox, heard = registered()

    def away(_sandbox_id: str) -> None:
        raise OSError("database is away")

    a.keep_quarantine = away
    a.quarantine("s")
    assert sandbox.quarantined and heard.told == ["s"]
    assert "could not write the quarantine of sandbox s" in caplog.text
