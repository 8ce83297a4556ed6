"""The handle an evaluation reports through: it checks what it is told and passes the rest to the search."""

from __future__ import annotations

import math

import pytest

from tools.reporting import Reporter


def test_without_a_search_behind_it_reports_are_kept_and_nothing_stops() -> None:
    reporter = Reporter()
    assert reporter.report(0.5, 1) is False
    assert reporter.report(0.6, 2.5) is False
    assert (reporter.last, reporter.should_stop()) == ((2.5, 0.6), False)


def test_the_search_is_asked_until_it_says_stop_and_then_no_more() -> None:
    asked: list[tuple[float, float]] = []

    def decide(step: float, value: float) -> bool:
        asked.append((step, value))
        return step >= 2

    reporter = Reporter(decide)
    assert [reporter.report(v, s) for s, v in ((1, 0.1), (2, 0.2), (3, 0.3))] == [False, True, True]
    assert asked == [(1.0, 0.1), (2.0, 0.2)]
    assert reporter.should_stop() and reporter.last == (3.0, 0.3)


def test_a_nan_is_kept_as_the_last_value_but_never_judged() -> None:
    reporter = Reporter(lambda step, value: pytest.fail("a NaN was handed to the scheduler"))
    assert reporter.report(math.nan, 1) is False
    assert math.isnan(reporter.last[1])


@pytest.mark.parametrize(
    ("value", "step", "error"),
    [("0.5", 1, "takes a number as value"), (True, 1, "takes a number as value"), (0.5, -1, "step"),
     (0.5, math.inf, "step"), (0.5, "3", "step"), (0.5, 1, "steps must grow")],
)  # fmt: skip
def test_bad_reports_are_refused_naming_the_problem(value, step, error) -> None:
    reporter = Reporter()
    reporter.report(0.1, 1)
    with pytest.raises(ValueError, match=error):
        reporter.report(value, step)
