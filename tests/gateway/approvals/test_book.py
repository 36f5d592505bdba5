"""The approval book on a real SQLite database: a held request waits for a decision made in
another thread (as the API makes it), times out, is shared by identical requests, and an
allow for the sandbox answers later identical requests without asking."""

from __future__ import annotations

import asyncio
import shutil
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import Engine

from gateway.approvals.ask import Ask, Outcome, Scope
from gateway.approvals.book import ApprovalBook, Conflict
from gateway.db import make_engine
from gateway.errors import SandgateError

ASK = Ask("sb1", "tok-1", "web", "v1", "writes", "https", "api.test", 443, "POST", "/items")


ENGINES: list[Engine] = []


@pytest.fixture(scope="module")
def migrated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One database brought to the newest schema, copied for each test (migrating is the
    slow part)."""
    path = tmp_path_factory.mktemp("approvals") / "template.db"
    make_engine(f"sqlite:///{path}").dispose()
    return path


@pytest.fixture(autouse=True)
def _database(tmp_path: Path, migrated: Path) -> Iterator[None]:
    shutil.copy(migrated, tmp_path / "a.db")
    yield
    while ENGINES:
        ENGINES.pop().dispose()


def book(tmp_path: Path, timeout: float = 30.0, **kw: Any) -> tuple[ApprovalBook, list[Any]]:
    rows: list[dict[str, Any]] = []
    engine = make_engine(f"sqlite:///{tmp_path / 'a.db'}", migrate=False)
    ENGINES.append(engine)
    return ApprovalBook(engine, rows.append, gateway_id="gw1", timeout=timeout, **kw), rows


async def pending(b: ApprovalBook, count: int = 1) -> list[dict[str, Any]]:
    for _ in range(500):
        found = await asyncio.to_thread(b.list, "pending")
        if len(found) >= count:
            return found
        await asyncio.sleep(0.01)
    raise AssertionError("no pending approval appeared")


async def decide_in_thread(b: ApprovalBook, approval: int, **kw: Any) -> dict[str, Any]:
    result: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: result.update(b.decide(approval, **kw)))
    thread.start()
    await asyncio.to_thread(thread.join)
    return result


def test_a_held_request_goes_when_a_person_allows_it(tmp_path: Path) -> None:
    b, rows = book(tmp_path)

    async def scenario() -> Outcome:
        held = asyncio.ensure_future(b.ask(ASK))
        [row] = await pending(b)
        assert (row["host"], row["method"], row["path"], row["status"]) == (
            "api.test", "POST", "/items", "pending")
        assert not held.done()        # held, not answered
        await decide_in_thread(b, row["id"], allow=True, scope=Scope.ONCE, who="alice (t:1)")
        return await asyncio.wait_for(held, 5)

    outcome = asyncio.run(scenario())
    assert (outcome.allowed, outcome.reason, outcome.by, outcome.scope) == (
        True, "approved", "alice (t:1)", "once")
    [audit] = rows
    assert (audit["decision"], audit["reason"], audit["actor"], audit["protocol"]) == (
        "allow", "approved", "alice (t:1)", "approval")


def test_a_denied_request_is_refused_and_a_second_decision_conflicts(tmp_path: Path) -> None:
    b, rows = book(tmp_path)

    async def scenario() -> tuple[Outcome, int]:
        held = asyncio.ensure_future(b.ask(ASK))
        [row] = await pending(b)
        await decide_in_thread(b, row["id"], allow=False, scope=Scope.ONCE, who="bob")
        return await asyncio.wait_for(held, 5), row["id"]

    outcome, approval = asyncio.run(scenario())
    assert (outcome.allowed, outcome.reason, outcome.by) == (False, "approval_denied", "bob")
    with pytest.raises(Conflict, match="already denied"):
        b.decide(approval, allow=True, scope=Scope.ONCE, who="mallory")
    assert [r["actor"] for r in rows] == ["bob"]


def test_nobody_deciding_denies_it_when_the_time_is_up(tmp_path: Path) -> None:
    b, rows = book(tmp_path, timeout=0.3)
    outcome = asyncio.run(asyncio.wait_for(b.ask(ASK), 10))
    assert (outcome.allowed, outcome.reason) == (False, "approval_timeout")
    [row] = b.list()
    assert row["status"] == "expired"
    assert [(r["decision"], r["reason"], r["actor"]) for r in rows] == [
        ("deny", "approval_timeout", None)]


def test_each_held_request_has_its_own_approval_and_once_releases_only_it(
        tmp_path: Path) -> None:
    """Requests alike in path may differ in query and body: a person allows what they were
    shown, one request, not every request waiting with the same path."""
    b, _rows = book(tmp_path)
    shown = replace(ASK, query="draft=1&token=[redacted]", body=12)
    other = replace(ASK, query="draft=2", body=None)

    async def scenario() -> tuple[Outcome, list[dict[str, Any]], bool]:
        first = asyncio.ensure_future(b.ask(shown))
        second = asyncio.ensure_future(b.ask(other))      # at the same moment
        rows = await pending(b, 2)
        mine = next(r for r in rows if r["query"] == shown.query)
        await decide_in_thread(b, mine["id"], allow=True, scope=Scope.ONCE, who="a")
        outcome = await asyncio.wait_for(first, 5)
        still = not second.done()
        [left] = await asyncio.to_thread(b.list, "pending")
        await decide_in_thread(b, left["id"], allow=False, scope=Scope.ONCE, who="a")
        await asyncio.wait_for(second, 5)
        return outcome, rows, still

    outcome, rows, still_waiting = asyncio.run(scenario())
    assert outcome.allowed and still_waiting
    assert sorted((r["query"], r["body_bytes"]) for r in rows) == [
        ("draft=1&token=[redacted]", 12), ("draft=2", None)]


def test_the_cap_counts_requests_not_questions(tmp_path: Path) -> None:
    b, _rows = book(tmp_path, max_pending=2)

    async def scenario() -> Outcome:
        waiting = [asyncio.ensure_future(b.ask(ASK)) for _ in range(2)]
        await pending(b, 2)
        refused = await asyncio.wait_for(b.ask(ASK), 5)    # the same request a third time
        for w in waiting:
            w.cancel()
        return refused

    outcome = asyncio.run(scenario())
    assert (outcome.allowed, outcome.reason) == (False, "approval_denied")


def test_an_allow_for_the_sandbox_answers_the_same_request_later(tmp_path: Path) -> None:
    b, _rows = book(tmp_path)
    other_sandbox = Ask("sb2", None, "web", "v1", "writes", "https", "api.test", 443, "POST",
                        "/items")

    async def scenario() -> tuple[Outcome, int, int]:
        held = asyncio.ensure_future(b.ask(ASK))
        [row] = await pending(b)
        await decide_in_thread(b, row["id"], allow=True, scope=Scope.SANDBOX, who="a")
        await asyncio.wait_for(held, 5)
        again = await asyncio.wait_for(b.ask(ASK), 5)    # answered at once
        other = asyncio.ensure_future(b.ask(other_sandbox))
        [asked] = await pending(b)                        # another sandbox is asked about
        await decide_in_thread(b, asked["id"], allow=False, scope=Scope.ONCE, who="a")
        await asyncio.wait_for(other, 5)
        return again, row["id"], asked["id"]

    again, approval, asked = asyncio.run(scenario())
    assert (again.allowed, again.approval, again.scope) == (True, approval, "sandbox")
    assert asked != approval


def test_a_sandbox_cannot_flood_the_deciders(tmp_path: Path) -> None:
    b, _rows = book(tmp_path, max_pending=2)

    async def scenario() -> Outcome:
        waiting = [asyncio.ensure_future(b.ask(Ask("sb1", None, "web", "v1", None, "https",
                                                    "api.test", 443, "GET", path)))
                   for path in ("/a", "/b")]
        await pending(b, 2)
        refused = await asyncio.wait_for(b.ask(ASK), 5)
        assert not any(w.done() for w in waiting)    # the two still wait
        return refused

    outcome = asyncio.run(scenario())
    assert (outcome.allowed, outcome.reason) == (False, "approval_denied")
    assert "already wait" in (outcome.detail or "")


def test_a_restart_expires_what_the_gateway_held(tmp_path: Path) -> None:
    b, _rows = book(tmp_path, timeout=30)

    async def scenario() -> None:
        held = asyncio.ensure_future(b.ask(ASK))
        await pending(b)
        held.cancel()

    asyncio.run(scenario())
    assert b.reconcile() == 1
    assert [r["status"] for r in b.list()] == ["expired"]


def test_an_allow_for_the_sandbox_over_https_is_no_allow_over_http(tmp_path: Path) -> None:
    b, _rows = book(tmp_path, timeout=0.5)
    clear = replace(ASK, scheme="http", port=443)

    async def scenario() -> Outcome:
        held = asyncio.ensure_future(b.ask(ASK))
        [row] = await pending(b)
        await decide_in_thread(b, row["id"], allow=True, scope=Scope.SANDBOX, who="a")
        await asyncio.wait_for(held, 5)
        return await asyncio.wait_for(b.ask(clear), 5)    # asked, nobody decides

    outcome = asyncio.run(scenario())
    assert (outcome.allowed, outcome.reason) == (False, "approval_timeout")


def test_a_revoked_allow_for_the_sandbox_is_asked_about_again(tmp_path: Path) -> None:
    b, rows = book(tmp_path, timeout=0.5)

    async def scenario() -> tuple[int, Outcome, Outcome]:
        held = asyncio.ensure_future(b.ask(ASK))
        [row] = await pending(b)
        await decide_in_thread(b, row["id"], allow=True, scope=Scope.SANDBOX, who="a")
        await asyncio.wait_for(held, 5)
        before = await asyncio.wait_for(b.ask(ASK), 5)
        await asyncio.to_thread(b.revoke, row["id"], who="sec (t:2)")
        after = await asyncio.wait_for(b.ask(ASK), 5)
        return row["id"], before, after

    approval, before, after = asyncio.run(scenario())
    assert before.allowed and (after.allowed, after.reason) == (False, "approval_timeout")
    assert b.get(approval)["status"] == "revoked"
    assert b.get(approval)["revoked_by"] == "sec (t:2)"
    revoked = [r for r in rows if r["actor"] == "sec (t:2)"]
    assert [(r["decision"], r["protocol"]) for r in revoked] == [("deny", "approval")]
    with pytest.raises(Conflict, match="not a standing allow"):
        b.revoke(approval, who="sec")


def test_an_allow_for_the_policy_stands_as_its_rule_not_as_an_approval(
        tmp_path: Path) -> None:
    """The policy is the truth: with the written rule removed, the request is asked about."""
    written: list[int] = []

    def writer(record: Any, who: str) -> Any:
        return lambda: (written.append(record.id) or 7, f"approved-{record.id}")

    b, _rows = book(tmp_path, timeout=0.5, write_policy=writer)

    async def scenario() -> Outcome:
        held = asyncio.ensure_future(b.ask(ASK))
        [row] = await pending(b)
        result = await decide_in_thread(b, row["id"], allow=True, scope=Scope.POLICY, who="a")
        assert (result["policy_rule"], result["revision"]) == (f"approved-{row['id']}", 7)
        await asyncio.wait_for(held, 5)
        return await asyncio.wait_for(b.ask(ASK), 5)

    outcome = asyncio.run(scenario())
    assert (outcome.allowed, outcome.reason) == (False, "approval_timeout")
    assert len(written) == 1


def test_a_rule_is_written_only_for_a_decision_that_won(tmp_path: Path) -> None:
    """The timeout settles the approval between the decider's look and its settle: the rule
    must not be written (it was, before: a rule in the policy and an expired approval)."""
    written: list[int] = []
    b, _rows = book(tmp_path)

    def writer(record: Any, who: str) -> Any:
        b._expire(record.id)          # the time ran out just now
        return lambda: (written.append(record.id) or 3, "approved-x")

    b.write_policy = writer

    async def scenario() -> None:
        held = asyncio.ensure_future(b.ask(ASK))
        [row] = await pending(b)
        with pytest.raises(Conflict, match="decided meanwhile"):
            b.decide(row["id"], allow=True, scope=Scope.POLICY, who="a")
        assert (await asyncio.wait_for(held, 5)).reason == "approval_timeout"

    asyncio.run(scenario())
    assert written == []


def test_a_rule_that_cannot_be_written_leaves_an_allow_for_once(tmp_path: Path) -> None:
    def failing() -> tuple[int | None, str]:
        raise OSError("disk full")

    b, rows = book(tmp_path, write_policy=lambda record, who: failing)

    async def scenario() -> tuple[Outcome, int]:
        held = asyncio.ensure_future(b.ask(ASK))
        [row] = await pending(b)
        with pytest.raises(SandgateError, match=r"allowed once only.*disk full"):
            await asyncio.to_thread(b.decide, row["id"], allow=True, scope=Scope.POLICY,
                                    who="a")
        return await asyncio.wait_for(held, 5), row["id"]

    outcome, approval = asyncio.run(scenario())
    assert (outcome.allowed, outcome.scope) == (True, "once")
    assert (b.get(approval)["scope"], b.get(approval)["policy_rule"]) == ("once", None)
    assert "could not be written" in rows[-1]["error"]
