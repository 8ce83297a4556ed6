"""Schedulers decide from the reports alone: the same contract for each, then what makes each one itself."""

from __future__ import annotations

import pytest

from agent.strategies.schedulers import (
    ASHA,
    Board,
    Hyperband,
    Median,
    Scheduler,
    geometric_rungs,
    make_scheduler,
    quantile,
)


def report(board: Board, scheduler: Scheduler, ncode: str, step: float, value: float) -> bool:
    """What the report desk does: the report joins the board, then the scheduler is asked."""
    board.add(ncode, step, value)
    return scheduler.should_stop(ncode, step, value, board)


def finish(board: Board, scheduler: Scheduler, ncode: str, curve: list[float], finished: set[str]) -> list[bool]:
    answers = [report(board, scheduler, ncode, step, value) for step, value in enumerate(curve, start=1)]
    finished.add(ncode)
    return answers


SCHEDULERS = {
    "asha": lambda: ASHA(1, 9, 3),
    "hyperband": lambda: Hyperband(1, 9, 3, seed=0),
    "median": lambda: Median(1, startup=2),
}


@pytest.fixture(params=sorted(SCHEDULERS))
def scheduler(request: pytest.FixtureRequest) -> Scheduler:
    return SCHEDULERS[request.param]()


def test_the_first_evaluation_is_never_stopped(scheduler: Scheduler) -> None:
    board = Board()
    assert not any(report(board, scheduler, "a", step, 0.01 * step) for step in range(1, 10))


def test_a_clearly_worse_evaluation_is_stopped_and_the_best_is_not(scheduler: Scheduler) -> None:
    finished: set[str] = set()
    board = Board(finished=lambda: set(finished))
    codes = [f"{i:02d}" for i in range(12)]
    if isinstance(scheduler, Hyperband):  # halved only against its own bracket: take codes of bracket 0
        codes = [code for code in (f"{i:03d}" for i in range(200)) if scheduler.bracket_of(code) == 0][:12]
    for i, code in enumerate(codes[:10]):
        finish(board, scheduler, code, [0.5 + 0.01 * i] * 9, finished)
    assert any(finish(board, scheduler, codes[10], [0.1] * 9, finished)), "a curve far below every other"
    assert not any(finish(board, scheduler, codes[11], [0.9] * 9, finished)), "a curve above every other"


def test_a_decision_depends_on_the_reports_only(scheduler: Scheduler) -> None:
    """What a resumed run relies on: a new scheduler object given the same board answers the same."""
    finished: set[str] = set()
    board = Board(finished=lambda: set(finished))
    for i in range(8):
        finish(board, scheduler, f"c{i}", [0.2 + 0.05 * i + 0.01 * s for s in range(9)], finished)
    board.add("new", 1, 0.25)
    again = type(scheduler)(**vars(scheduler))
    assert scheduler.should_stop("new", 1, 0.25, board) == again.should_stop("new", 1, 0.25, board)


def test_asha_judges_at_rungs_only_against_the_top_third() -> None:
    asha, board = ASHA(1, 27, 3), Board()
    assert geometric_rungs(1, 27, 3) == [1, 3, 9]
    for code, value in (("a", 0.9), ("b", 0.5), ("c", 0.1)):
        report(board, asha, code, 1, value)
    # At rung 1 the cutoff is the 2/3 quantile of a, b, c: above b, so b would be stopped there...
    assert quantile([0.9, 0.5, 0.1], 2 / 3) == pytest.approx(0.6333, abs=1e-4)
    assert report(board, asha, "d", 1, 0.5)
    # ...but between rungs nothing is judged, and at rung 3 it is compared with those that reached rung 3.
    assert not report(board, asha, "e", 1, 0.95)
    assert not report(board, asha, "e", 2, 0.0)
    assert not report(board, asha, "e", 3, 0.5), "the first to reach rung 3 has nobody to lose to"


def test_asha_judges_a_report_that_jumps_past_a_rung_at_that_rung() -> None:
    asha, board = ASHA(1, 27, 3), Board()
    for code in "abc":
        report(board, asha, code, 1, 0.9)
        report(board, asha, code, 3, 0.9)
    assert report(board, asha, "d", 5, 0.1), "a script reporting every 5 epochs is judged at rung 3 with step 5"


def test_hyperband_brackets_are_fixed_by_seed_and_code_and_weighted_to_the_first() -> None:
    hyperband = Hyperband(1, 27, 3, seed=4)
    assert hyperband.brackets() == 3
    codes = [f"{i:04d}" for i in range(600)]
    brackets = [hyperband.bracket_of(code) for code in codes]
    assert brackets == [Hyperband(1, 27, 3, seed=4).bracket_of(code) for code in codes]
    assert brackets != [Hyperband(1, 27, 3, seed=5).bracket_of(code) for code in codes]
    counts = [brackets.count(s) for s in range(3)]
    assert counts[0] > counts[1] > counts[2] > 0, counts
    first = next(code for code, bracket in zip(codes, brackets, strict=True) if bracket == 2)
    assert hyperband.rungs_of(first) == [9]


def test_median_waits_for_its_startup_evaluations() -> None:
    finished: set[str] = set()
    median, board = Median(1, startup=3), Board(finished=lambda: set(finished))
    finish(board, median, "a", [0.8] * 4, finished)
    finish(board, median, "b", [0.7] * 4, finished)
    assert not report(board, median, "c", 1, 0.1), "two finished evaluations are fewer than the startup of 3"
    finish(board, median, "d", [0.9] * 4, finished)
    assert report(board, median, "e", 1, 0.1)
    assert not report(board, median, "f", 1, 0.85)
    at_the_end = Median(1, startup=3, max_fidelity=4)
    assert not report(board, at_the_end, "g", 4, 0.1), "the last step is the result, not a report to judge"


@pytest.mark.parametrize(
    ("name", "max_fidelity", "error"),
    [("asha", None, "needs --max-fidelity"), ("hyperband", None, "needs --max-fidelity"), ("sha", 9, "unknown")],
)
def test_make_scheduler_says_what_is_missing(name: str, max_fidelity: float | None, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        make_scheduler(name, 1, max_fidelity, 3, 0)


def test_make_scheduler_none_and_median_need_no_maximum() -> None:
    assert make_scheduler("none", 1, None, 3, 0) is None
    assert isinstance(make_scheduler("median", 1, None, 3, 0), Median)
