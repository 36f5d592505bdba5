"""Budget units and the `budget:` key: sizes and periods as written, and what is refused."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from policies.budgets import parse_period, parse_size, show_period, show_size
from policies.schema import Budget, PolicySpec, RuleSpec


@pytest.mark.parametrize(("text", "size"), [
    ("10MiB", 10 * 2**20), ("500kB", 500_000), ("1 GiB", 2**30), ("7", 7), (1048576, 2**20),
    ("3b", 3), ("2TB", 2 * 10**12),
])
def test_sizes(text: str | int, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "ten", "10 MiBs", "-1", "0", True, "1.5MiB", "10XB"])
def test_bad_sizes(text: str | bool) -> None:
    with pytest.raises(ValueError, match=r"size|nothing"):
        parse_size(text)


@pytest.mark.parametrize(("text", "seconds"), [
    ("1h", 3600), ("15m", 900), ("30s", 30), ("1d", 86400), (60, 60), ("31d", 31 * 86400),
])
def test_periods(text: str | int, seconds: int) -> None:
    assert parse_period(text) == seconds


@pytest.mark.parametrize("text", ["1w", "h", "0s", "32d", "1.5h", False, "1 hour"])
def test_bad_periods(text: str | bool) -> None:
    with pytest.raises(ValueError, match="period"):
        parse_period(text)


def test_shown_in_the_largest_unit() -> None:
    assert (show_size(10 * 2**20), show_size(1500), show_size(2048)) == ("10MiB", "1500B",
                                                                         "2KiB")
    assert (show_period(3600), show_period(90), show_period(86400)) == ("1h", "90s", "1d")


def test_a_budget_as_the_issue_writes_it() -> None:
    budget = Budget.model_validate({"bytes_up": "10MiB", "requests": 1000, "per": "1h"})
    assert (budget.bytes_up, budget.requests, budget.per) == (10 * 2**20, 1000, 3600)


@pytest.mark.parametrize(("data", "message"), [
    ({"per": "1h"}, "needs `bytes_up`, `requests` or both"),
    ({"requests": 5}, "per"),                                   # the period is not guessed
    ({"requests": 0, "per": "1h"}, "greater than or equal to 1"),
    ({"requests": 5, "per": "1h", "bytes_down": 5}, "Extra inputs"),
])
def test_bad_budgets(data: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Budget.model_validate(data)


def test_a_deny_rule_carries_no_budget() -> None:
    with pytest.raises(ValidationError, match="deny rule sends nothing"):
        RuleSpec.model_validate({"id": "d", "action": "deny", "hosts": ["x.test"],
                                 "budget": {"requests": 1, "per": "1h"}})


def test_policy_level_budget_is_the_sandboxs() -> None:
    spec = PolicySpec.model_validate({"version": 1, "name": "p",
                                      "budget": {"bytes_up": "1MiB", "per": "1d"}})
    assert spec.budget is not None and spec.budget.bytes_up == 2**20
