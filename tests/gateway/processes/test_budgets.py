"""The budget ledger: counts per sandbox and rule, fixed windows, what is refused and why."""

from __future__ import annotations

import asyncio
import threading

from gateway.processes.budgets import Allowance, Cap, Ledger, caps
from policies.schema import Budget

HOUR = 3600


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def cap(bytes_up: int | None = None, requests: int | None = None, rule: str | None = "up",
        per: int = HOUR) -> Cap:
    return Cap("rule" if rule else "sandbox", rule, bytes_up, requests, per)


def test_requests_are_counted_until_the_budget_is_spent() -> None:
    ledger = Ledger(Clock(10 * HOUR + 5))
    budget = [cap(requests=2)]
    assert [ledger.admit("s", "p", budget, 0).refused is None for _ in range(3)] == \
        [True, True, False]
    assert ledger.admit("s", "p", budget, 0).refused == \
        "rule up's budget (2 requests per 1h) is spent: 2 requests sent"
    assert ledger.admit("other", "p", budget, 0).refused is None   # per sandbox


def bytes_up(ledger: Ledger) -> dict[tuple[str, str | None], int]:
    return {(u["scope"], u["rule"]): u["bytes_up"] for u in ledger.usage()}


def test_an_announced_body_is_reserved_and_refused_when_it_does_not_fit() -> None:
    ledger = Ledger(Clock(0))
    budget = [cap(bytes_up=100)]
    assert ledger.admit("s", "p", budget, 70).refused is None
    refused = ledger.admit("s", "p", budget, 31)
    assert refused.refused is not None and "this request is 31 (head and body)" in refused.refused
    assert ledger.admit("s", "p", budget, 30).refused is None
    assert ledger.admit("s", "p", budget, 0).refused is not None   # nothing left at all


def test_leases_grant_what_the_tightest_budget_has_left_and_no_more() -> None:
    ledger = Ledger(Clock(0))
    both = [cap(bytes_up=1000), cap(bytes_up=300, rule=None)]
    first = ledger.admit("s", "p", both, 20, lease=200)
    assert (first.leased, first.spent) == (200, False)
    assert ledger.lease("s", "p", both, 200).granted == 80      # 300 - 20 - 200
    assert ledger.lease("s", "p", both, 1).granted == 0          # parallel streams stop here
    refused = ledger.admit("s", "p", both, 0).refused
    assert refused is not None and refused.startswith("the sandbox's budget (300B up per 1h)")
    assert bytes_up(ledger) == {("rule", "up"): 300, ("sandbox", None): 300}
    ledger.give_back("s", "p", both, 150, first.at)             # a stream sent 50 of its 200
    assert ledger.lease("s", "p", both, 1000).granted == 150
    ledger.spend("s", "p", both, 7)          # credit a stream went on: counted, even past
    assert bytes_up(ledger) == {("rule", "up"): 307, ("sandbox", None): 307}


def test_a_lease_given_back_after_its_window_ended_is_not_given_to_the_next() -> None:
    clock = Clock(HOUR - 1)
    ledger = Ledger(clock)
    budget = [cap(bytes_up=100)]
    grant = ledger.lease("s", "p", budget, 60)
    clock.now = HOUR + 1
    assert ledger.lease("s", "p", budget, 30).granted == 30
    ledger.give_back("s", "p", budget, 60, grant.at)
    assert bytes_up(ledger) == {("rule", "up"): 30}


def test_a_refused_request_counts_against_no_budget() -> None:
    ledger = Ledger(Clock(0))
    rule, sandbox = cap(requests=5), cap(requests=1, rule=None)
    ledger.admit("s", "p", [rule, sandbox], 0)
    assert ledger.admit("s", "p", [rule, sandbox], 0).refused is not None
    [rule_usage] = [u for u in ledger.usage() if u["scope"] == "rule"]
    assert rule_usage["requests"] == 1


def test_windows_are_fixed_and_aligned_to_the_epoch() -> None:
    clock = Clock(5 * HOUR + HOUR - 1)
    ledger = Ledger(clock)
    budget = [cap(requests=1)]
    assert ledger.admit("s", "p", budget, 0).refused is None
    assert ledger.admit("s", "p", budget, 0).refused is not None
    [usage] = ledger.usage()
    assert (usage["window_start"], usage["resets_at"]) == (5 * HOUR, 6 * HOUR)
    clock.now = 6 * HOUR            # the next window: a fresh budget
    assert ledger.usage()[0]["requests"] == 0
    assert ledger.admit("s", "p", budget, 0).refused is None


def test_a_reloaded_policy_limit_applies_at_once() -> None:
    ledger = Ledger(Clock(0))
    ledger.admit("s", "p", [cap(requests=1)], 0)
    assert ledger.admit("s", "p", [cap(requests=3)], 0).refused is None
    assert ledger.usage()[0]["requests_limit"] == 3


def test_a_gone_sandbox_is_shown_until_its_window_ends() -> None:
    clock = Clock(10)
    ledger = Ledger(clock)
    ledger.admit("gone", "p", [cap(requests=5)], 0)
    ledger.admit("live", "p", [cap(requests=5)], 0)
    ledger.forget("gone")
    ledger.forget("never-seen")
    assert [(u["sandbox_id"], u["sandbox_gone"], u["requests"]) for u in ledger.usage()] == \
        [("gone", True, 1), ("live", False, 1)]
    clock.now = HOUR
    assert [(u["sandbox_id"], u["requests"]) for u in ledger.usage()] == [("live", 0)]


def test_caps_of_a_decision() -> None:
    rule_budget = Budget(requests=3, per=60)
    sandbox_budget = Budget(bytes_up=10, per=HOUR)
    assert caps("r", rule_budget, sandbox_budget) == (
        Cap("rule", "r", None, 3, 60), Cap("sandbox", None, 10, None, HOUR))
    assert caps(None, rule_budget, None) == ()


def test_a_new_count_starts_from_what_the_audit_log_says_was_spent() -> None:
    asked: list[tuple[str, str | None, int]] = []

    def seed(sandbox_id: str, rule: str | None, start: int) -> tuple[int, int]:
        asked.append((sandbox_id, rule, start))
        return (90, 4) if rule else (500, 9)

    ledger = Ledger(Clock(2 * HOUR + 10), seed)
    both = [cap(bytes_up=100, requests=5), cap(requests=10, rule=None)]

    async def ask() -> list[Allowance]:
        await asyncio.gather(*(ledger.ready("s", "p", both) for _ in range(3)))
        return [ledger.admit("s", "p", both, 0, lease=50) for _ in range(2)]

    first, second = asyncio.run(ask())
    assert (first.leased, first.spent) == (10, True)    # 100 - 90, and the 5th request
    assert second.refused is not None                   # the rule's 5 are spent
    assert asked == [("s", "up", 2 * HOUR), ("s", None, 2 * HOUR)]   # once per count


def test_the_audit_log_is_read_off_the_event_loop() -> None:
    """The first count of a budget reads the audit log: in the main process that loop is the
    hub's, answering every worker, so the read must not stall it."""
    reading, done = threading.Event(), threading.Event()

    def seed(_sandbox_id: str, _rule: str | None, _start: int) -> tuple[int, int]:
        reading.set()
        done.wait(10)           # a slow database
        return 7, 1

    ledger = Ledger(Clock(0), seed)

    async def scenario() -> tuple[bool, int]:
        asking = asyncio.ensure_future(ledger.ready("s", "p", [cap(requests=5)]))
        while not reading.is_set():         # the loop runs while the log is read
            await asyncio.sleep(0.001)
        waited = not asking.done()
        done.set()
        await asking
        return waited, ledger.admit("s", "p", [cap(requests=5)], 0).refused is None

    assert asyncio.run(asyncio.wait_for(scenario(), 5)) == (True, True)
    assert ledger.usage()[0]["requests"] == 2           # the 1 read, and this one


def test_an_unreadable_audit_log_counts_from_nothing() -> None:
    def seed(_sandbox_id: str, _rule: str | None, _start: int) -> tuple[int, int]:
        raise OSError("database away")

    ledger = Ledger(Clock(0), seed)
    asyncio.run(ledger.ready("s", "p", [cap(requests=1)]))
    assert ledger.admit("s", "p", [cap(requests=1)], 0).refused is None
