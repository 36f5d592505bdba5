"""The hub's messages: every type survives the wire unchanged, and the hub answers a worker's
questions and takes its audit rows over a real Unix socket."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from gateway.approvals.ask import Ask
from gateway.audit.writer import AuditWriter
from gateway.dataplane.registry import Registry
from gateway.db import make_engine
from gateway.processes import protocol
from gateway.processes.authority import Authority
from gateway.processes.hub import Hub
from gateway.readiness import Readiness
from policies.schema import Limits
from tests.token_servers import Servers

SNAPSHOT = protocol.SandboxSnapshot(
    id="a1", ip="10.77.0.2", policy="/p/web.yaml", network="198.18.0.0/24",
    assignments={"198.18.0.7": "x.test"}, env={"K": "V"}, secrets={"T": "sgp_x"},
    owner="tok-1", quarantined=False)
LIMITS = Limits(requests_per_minute=10, bytes_per_minute=None)
CAP = {"scope": "rule", "rule": "up", "bytes_up": 100, "requests": None, "per": 3600}
EVERY_MESSAGE: list[protocol.Message] = [
    protocol.Hello(worker=1, pid=42),
    protocol.Acquire(id=1, sandbox="a1", limit=5),
    protocol.Admit(id=2, sandbox="a1", rule="r", limits=LIMITS),
    protocol.BudgetAsk(id=5, sandbox="a1", policy="web", caps=[CAP], expected=10, lease=64),
    protocol.Spend(sandbox="a1", policy="web", caps=[CAP], size=99),
    protocol.Lease(id=6, sandbox="a1", policy="web", caps=[CAP], want=1024),
    protocol.Unlease(sandbox="a1", policy="web", caps=[CAP], size=512, at=1796054973.5),
    protocol.NameFor(id=3, sandbox="a1", address="198.18.0.7"),
    protocol.Mint(id=4, secret="GH", generation="2@2026-01-01T00:00:00",
                  narrow={"repositories": ["hello"], "permissions": [["contents", "read"]],
                          "scopes": [], "audience": None}, sandbox="a1"),
    protocol.Approve(id=5, ask=Ask("a1", "tok-1", "web", "v1", "ask-all", "https", "x.test",
                                   443, "POST", "/repos/a", "page=2", None)),
    protocol.Release(sandbox="a1"),
    protocol.Charge(sandbox="a1", rule="r", limits=LIMITS, size=123),
    protocol.Quarantine(sandbox="a1"),
    protocol.Record(rows=[protocol.record_values({"decision": "allow", "port": 443,
                                                  "time": 1.5})] * 2),
    protocol.Active(sandbox="a1"),
    protocol.Ready(),
    protocol.Ack(ack=7),
    protocol.Answer(re=3, value="x.test"),
    protocol.Add(SNAPSHOT, ack=8),
    protocol.Remove("a1", ack=9),
    protocol.Quarantined("a1"),
    protocol.Mapped("a1", "198.18.0.9", "y.test"),
    protocol.VaultChanged(ack=10),
    protocol.Synced(ack=11),
]


def test_every_message_type_is_covered() -> None:
    assert {type(m).op for m in EVERY_MESSAGE} == set(protocol.Op)


@pytest.mark.parametrize("message", EVERY_MESSAGE, ids=lambda m: type(m).__name__)
def test_round_trip(message: protocol.Message) -> None:
    line = protocol.encode(message)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert protocol.decode(line) == message


@pytest.mark.parametrize("line", [b"", b"{}", b"[1]", b'{"op": "nope"}',
                                  b'{"op": "acquire", "id": 1}',
                                  b'{"op": "admit", "id": 1, "sandbox": "a", "rule": "r", '
                                  b'"limits": {"requests_per_minute": -1}}',
                                  b'{"op": "release", "sandbox": "a", "extra": 1}',
                                  b'{"op": "record", "rows": [[1, 2]]}',
                                  b'{"op": "record", "rows": 7}'])
def test_what_is_not_a_message_is_refused(line: bytes) -> None:
    with pytest.raises(protocol.ProtocolError):
        protocol.decode(line)


def test_a_refused_line_is_not_repeated_in_the_error() -> None:
    """An answer may carry a minted credential: the error (logged) shows none of it."""
    with pytest.raises(protocol.ProtocolError) as caught:
        protocol.decode(b'{"op": "answer", "re": 1, "value": {"value": "ghs_secret"}, "x": 1}')
    assert "ghs_secret" not in str(caught.value)


def test_a_worker_asks_for_a_minted_value(tmp_path: Path, servers: Servers) -> None:
    from gateway.providers.broker import Broker
    from tests.doubles import RowSink, wsgi_connector
    from vault import providers
    from vault.crypto import MasterKey
    from vault.store import Vault

    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    vault = Vault(engine, MasterKey.generate())
    providers.store(vault, "API", servers.client_credentials())
    current = vault.current("API")
    assert current is not None
    broker = Broker(vault, wsgi_connector(servers.app), lambda _row: None)
    registry = Registry()
    hub = Hub(Authority(registry), RowSink(), registry, tmp_path / "hub.sock",  # type: ignore[arg-type]
              broker=broker)

    async def scenario() -> list[Any]:
        await hub.start()
        got = await _talk(hub.path, [
            protocol.Hello(worker=0, pid=1),
            protocol.Mint(id=1, secret="API", generation=current.generation, narrow=None,
                          sandbox="s"),
            protocol.Mint(id=2, secret="NONE", generation="1@x", narrow=None, sandbox="s"),
        ], answers=3)
        await hub.close(timeout=2)
        return got

    _synced, *answers = asyncio.run(scenario())
    by_id = {a.re: a.value for a in answers}
    assert by_id[1]["value"] == servers.issued("oauth")[-1]["token"]
    assert by_id[1]["fresh_until"] > time.time() and by_id[1]["error"] is None
    assert by_id[2]["value"] is None and "no secret named 'NONE'" in by_id[2]["error"]
    broker.close()
    engine.dispose()


async def _talk(hub_path: Path, messages: list[protocol.Message],
                answers: int) -> list[protocol.Message]:
    reader, writer = await asyncio.open_unix_connection(str(hub_path))
    for message in messages:
        writer.write(protocol.encode(message))
    await writer.drain()
    got = [protocol.decode(await reader.readline()) for _ in range(answers)]
    writer.close()
    return got


def test_a_worker_asks_and_tells_through_a_real_socket(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    writer = AuditWriter(engine, gateway_id="g")
    writer.start()
    registry = Registry()
    authority = Authority(registry)
    hub = Hub(authority, writer, registry, tmp_path / "hub.sock")

    async def scenario() -> list[Any]:
        await hub.start()
        got = await _talk(hub.path, [
            protocol.Hello(worker=0, pid=1),
            protocol.Acquire(id=1, sandbox="s", limit=1),
            protocol.Acquire(id=2, sandbox="s", limit=1),     # over the limit
            protocol.Record(rows=[protocol.record_values({
                "decision": "deny", "reason": "no_matching_rule", "protocol": "dns",
                "time": time.time()})]),
            protocol.Ready(),
            protocol.NameFor(id=3, sandbox="unknown", address="198.18.0.1"),
        ], answers=4)
        await hub.close(timeout=2)
        return got

    answers = asyncio.run(scenario())
    assert answers == [protocol.Synced(ack=1), protocol.Answer(1, True),
                       protocol.Answer(2, False), protocol.Answer(3, None)]
    assert authority.open_connections("s") == 0    # the worker left: its count went with it
    assert writer.flush()
    writer.close()
    from gateway.audit.writer import count_rows
    assert count_rows(engine) == 1
    engine.dispose()


def test_leases_from_two_workers_never_pass_the_budget_through_a_real_socket(
        tmp_path: Path) -> None:
    """What one worker leases, the other cannot: the hub keeps one count, grants what is left
    and no more, and takes back what a stream did not use."""
    from tests.doubles import RowSink

    registry = Registry()
    authority = Authority(registry)
    hub = Hub(authority, RowSink(), registry, tmp_path / "hub.sock")  # type: ignore[arg-type]

    async def scenario() -> list[Any]:
        await hub.start()
        first = await _talk(hub.path, [
            protocol.Hello(worker=0, pid=1),
            protocol.BudgetAsk(id=1, sandbox="s", policy="web", caps=[CAP], expected=0,
                               lease=70),
        ], answers=2)
        second = await _talk(hub.path, [   # another worker, while the first one streams
            protocol.Hello(worker=1, pid=2),
            protocol.Lease(id=1, sandbox="s", policy="web", caps=[CAP], want=70),
            protocol.Lease(id=2, sandbox="s", policy="web", caps=[CAP], want=10),
        ], answers=3)
        at = first[1].value["at"]
        third = await _talk(hub.path, [    # the first stream ended having sent 50
            protocol.Hello(worker=0, pid=3),
            protocol.Unlease(sandbox="s", policy="web", caps=[CAP], size=20, at=at),
            protocol.Lease(id=1, sandbox="s", policy="web", caps=[CAP], want=50),
            protocol.BudgetAsk(id=2, sandbox="s", policy="web", caps=[CAP], expected=0),
        ], answers=3)
        await hub.close(timeout=2)
        return first[1:] + second[1:] + third[1:]

    answers = [a.value for a in asyncio.run(scenario()) if isinstance(a, protocol.Answer)]
    assert [(a.get("leased", a.get("granted")), a.get("spent"), a.get("refused"))
            for a in answers] == [
        (70, False, None), (30, True, None), (0, True, None), (20, True, None),
        (0, False, "rule up's budget (100B up per 1h) is spent: 100 bytes sent")]
    [usage] = authority.ledger.usage()
    assert (usage["bytes_up"], usage["requests"], usage["policy"]) == (100, 1, "web")


def test_a_worker_is_ready_once_it_listens_and_has_the_registry(tmp_path: Path) -> None:
    """Ready (listening) alone is not enough: the worker must also acknowledge the snapshot
    of live sandboxes the hub sent it; one gone is no longer ready."""
    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    writer = AuditWriter(engine, gateway_id="g")
    writer.start()
    registry = Registry()
    readiness = Readiness(workers=1)
    hub = Hub(Authority(registry), writer, registry, tmp_path / "hub.sock", readiness)

    async def scenario() -> list[bool]:
        await hub.start()
        seen = []
        reader, conn = await asyncio.open_unix_connection(str(hub.path))
        conn.write(protocol.encode(protocol.Hello(worker=0, pid=1)))
        synced = protocol.decode(await reader.readline())
        assert isinstance(synced, protocol.Synced) and synced.ack is not None
        conn.write(protocol.encode(protocol.Ready()))
        conn.write(protocol.encode(protocol.NameFor(id=1, sandbox="x", address="198.18.0.1")))
        await reader.readline()       # answered: the hub has handled Ready before it
        seen.append(readiness())
        conn.write(protocol.encode(protocol.Ack(ack=synced.ack)))
        conn.write(protocol.encode(protocol.NameFor(id=2, sandbox="x", address="198.18.0.1")))
        await reader.readline()
        seen.append(readiness())
        conn.close()
        await hub.close(timeout=2)
        seen.append(readiness())
        return seen

    assert asyncio.run(scenario()) == [False, True, False]
    writer.close()
    engine.dispose()


def test_a_worker_asks_for_approval_and_is_always_answered(tmp_path: Path) -> None:
    """The answer comes while the worker's other questions go on; with nobody to ask, or a
    book that fails, the request is refused rather than left waiting."""
    from gateway.approvals.ask import Outcome
    from tests.doubles import RowSink

    class Failing:
        async def ask(self, _ask: Ask) -> Outcome:
            raise RuntimeError("database away")

    registry = Registry()
    authority = Authority(registry)
    hub = Hub(authority, RowSink(), registry, tmp_path / "hub.sock")  # type: ignore[arg-type]
    ask = Ask("a1", None, "web", "v1", "w", "https", "x.test", 443, "POST", "/")

    async def scenario() -> list[Any]:
        await hub.start()
        first = await _talk(hub.path, [protocol.Hello(worker=0, pid=1),
                                       protocol.Approve(id=1, ask=ask),
                                       protocol.NameFor(id=2, sandbox="a1", address="x")],
                            answers=3)
        authority.approvals = Failing()  # type: ignore[assignment]
        second = await _talk(hub.path, [protocol.Hello(worker=1, pid=2),
                                        protocol.Approve(id=3, ask=ask)], answers=2)
        await hub.close(timeout=2)
        return [*first[1:], *second[1:]]

    answers = {a.re: a.value for a in asyncio.run(scenario())}
    assert answers[1]["allowed"] is False and answers[1]["reason"] == "approval_required"
    assert answers[2] is None
    assert (answers[3]["allowed"], answers[3]["reason"]) == (False, "approval_denied")
